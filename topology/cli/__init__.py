"""The ``ponos-topology`` command line.

Each command is a module of this package with ``add_parser(subparsers)`` and
``run(args) -> int``; heavy imports stay inside ``run`` so ``validate`` and
``graph`` start fast. Exit codes: 0 success, 1 runtime failure, 2 invalid usage
or config.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: Command modules, in the order ``--help`` lists them.
COMMANDS = ("run", "validate", "graph", "plan", "emit", "tail", "status", "apply", "test")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too, but says it our way
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ponos-topology", description=__doc__.splitlines()[0])
    from topology import __version__

    parser.add_argument("--version", action="version", version=f"ponos-topology {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"topology.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"topology.cli.{name}":
                raise
            continue  # command not built yet
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `ponos-topology tail ... | head`
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
