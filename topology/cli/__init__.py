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
from typing import NoReturn

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: Command modules, in the order ``--help`` lists them.
COMMANDS = (
    "run",
    "validate",
    "graph",
    "plan",
    "emit",
    "tail",
    "status",
    "state",
    "apply",
    "history",
    "rollback",
    "replay",
    "init",
    "dashboard",
    "test",
)

#: The end of each command's ``--help``: what people type, in one place.
EXAMPLES = {
    "run": """\
  ponos-topology run topology.yaml                      # embedded Redis beside the file
  ponos-topology run topology.yaml --redis-url redis://db:6379/0 --metrics-port 9100
  ponos-topology run topology.yaml --stop-when-idle 2   # a batch run: exit once idle
  ponos-topology run --deployment orders --redis-url redis://db:6379/0""",
    "validate": """\
  ponos-topology validate topology.yaml
  ponos-topology validate --strict topology.yaml        # warnings fail too (CI)
  ponos-topology validate --format json topology.yaml   # for editors and CI annotations""",
    "graph": """\
  ponos-topology graph topology.yaml -o topology.mmd
  ponos-topology graph topology.yaml -f dot | dot -Tsvg > topology.svg
  ponos-topology graph topology.yaml -f json --live     # with lengths, pending and lag""",
    "plan": """\
  ponos-topology plan running.yaml topology.yaml
  ponos-topology plan --exit-code running.yaml topology.yaml   # 3 when it changes something
  ponos-topology plan -f json running.yaml topology.yaml""",
    "emit": """\
  ponos-topology emit topology.yaml orders created '{"id": 1}' --topic eu.orders
  ponos-topology emit topology.yaml orders --file events.jsonl
  ponos-topology tail a.yaml orders --format json | ponos-topology emit b.yaml orders --file -""",
    "tail": """\
  ponos-topology tail topology.yaml orders -n 10
  ponos-topology tail topology.yaml orders --follow --topic eu.orders
  ponos-topology tail topology.yaml orders --from 1700000000000-0 --format json""",
    "status": """\
  ponos-topology status topology.yaml
  ponos-topology status topology.yaml --format json --redis-url redis://db:6379/0""",
    "state": """\
  ponos-topology state topology.yaml totals              # every key of sink totals
  ponos-topology state topology.yaml totals c42          # one key
  ponos-topology state topology.yaml totals --format json > totals.json""",
    "apply": """\
  ponos-topology apply topology.yaml --redis-url redis://db:6379/0
  ponos-topology run --deployment orders --redis-url redis://db:6379/0   # on each worker
  ponos-topology apply topology.yaml --dry-run          # the plan against the current version
  PONOS_DEPLOY_KEY=... ponos-topology apply topology.yaml   # a signed version""",
    "history": """\
  ponos-topology history orders --redis-url redis://db:6379/0
  ponos-topology history orders --format json""",
    "rollback": """\
  ponos-topology rollback orders                        # re-publish the previous version
  ponos-topology rollback orders --to 3 --redis-url redis://db:6379/0""",
    "replay": """\
  ponos-topology replay topology.yaml orders-dlq --dry-run   # what would move back
  ponos-topology replay topology.yaml orders-dlq --filter-error HandlerTimeout
  ponos-topology replay topology.yaml orders-dlq --to orders-retry""",
    "init": """\
  ponos-topology init my-topology && cd my-topology
  ponos-topology init . --name orders --force""",
    "dashboard": """\
  ponos-topology dashboard topology.yaml                # http://127.0.0.1:8765/ (run started)
  ponos-topology dashboard --deployment orders --redis-url redis://db:6379/0 --port 8080
  ponos-topology run topology.yaml --ui-port 8765       # the same page, served by the worker
  curl -s http://127.0.0.1:8765/api/snapshot            # the same figures as JSON""",
    "test": """\
  ponos-topology test                                   # every *_test.yaml under this folder
  ponos-topology test configs/pipeline_test.yaml --timeout 5
  ponos-topology test configs/ --format junit -o report.xml   # for CI""",
}


def _plain(text: str) -> str:
    """Help text without the reStructuredText markup the docstrings it comes from use."""
    return text.replace("``", "")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 too, but says it our way
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)

    def format_help(self) -> str:
        return _plain(super().format_help())

    def format_usage(self) -> str:
        return _plain(super().format_usage())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ponos-topology",
        description=__doc__.splitlines()[0],
        epilog="python -m topology works the same. Run a command with --help for its options.",
    )
    from topology import __version__

    parser.add_argument("--version", action="version", version=f"ponos-topology {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        command = importlib.import_module(f"topology.cli.{name}").add_parser(sub)
        if name in EXAMPLES:
            command.epilog = f"examples:\n{EXAMPLES[name]}"
            command.formatter_class = argparse.RawDescriptionHelpFormatter
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
