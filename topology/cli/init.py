"""``ponos-topology init [DIR]``: a minimal topology that validates, runs and tests as is.

Writes three files into DIR (default: the current folder, created if missing):
``<name>.yaml`` (a finite source, three streams, a sink with an output and a
dead-letter stream, a sink reading the dead letters), ``<name>_handlers.py`` (its handlers) and
``<name>_test.yaml`` (a whole-topology test in ``ponos-topology test``'s
format). ``<name>`` is ``--name``, else DIR's name made a valid deployment
name. Existing files are never overwritten without ``--force``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "files_for", "run"]

CONFIG = """\
# A minimal topology: run it with `ponos-topology run {name}.yaml --stop-when-idle 2`,
# test it with `ponos-topology test {name}_test.yaml`.
#
#   greet (source) --> greetings --> enrich --> enriched
#                                       | the handler kept failing
#                                       v
#                                 greetings-dlq --> review
version: 1
name: {name}
defaults:
  start: oldest
  retry: {{max_attempts: 3, backoff: 100ms}}
streams:
  greetings: {{}}
  enriched: {{}}
  greetings-dlq: {{}}
sources:
  greet:
    handler: {module}:greet
    stream: greetings
sinks:
  enrich:
    streams: [greetings]
    handler: {module}:enrich
    outputs: [enriched]
    dead_letter: greetings-dlq
  review:
    streams: [greetings-dlq]
    handler: {module}:review
"""

HANDLERS = '''\
"""Handlers of {name}.yaml: a finite source and one sink."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from topology import Emit, Event

log = logging.getLogger(__name__)


def greet() -> Iterator[Emit]:
    """Three greetings, then the source is done."""
    for who in ("world", "ponos", "redis"):
        yield Emit("greeting", {{"who": who}})


def enrich(event: Event) -> Emit:
    """One output stream, so the Emit need not name it. Raising retries, then dead-letters."""
    who = event.json()["who"]
    if not who:
        raise ValueError("a greeting needs someone to greet")
    return Emit("greeting.enriched", {{"who": who, "text": f"hello, {{who}}"}})


def review(event: Event) -> None:
    """Dead letters carry why they failed: ``error_type``, ``error``, ``attempts``..."""
    fields = {{k.decode(): v.decode() for k, v in (event.fields or {{}}).items()}}
    log.warning("dead letter %s: %s", event.id, fields.get("error", "?"))
'''

TEST = """\
# Whole-topology tests: `ponos-topology test {name}_test.yaml`.
config: {name}.yaml
tests:
  - name: a greeting is enriched
    given:
      greetings:
        - {{name: greeting, payload: {{who: world}}}}
    expect:
      enriched:
        - {{name: greeting.enriched, payload: {{who: world, text: "hello, world"}}}}
      greetings-dlq: []
  - name: a greeting for nobody is dead-lettered
    given:
      greetings:
        - {{name: greeting, payload: {{who: ""}}}}
    expect:
      enriched: []
      greetings-dlq:
        - {{name: greeting, payload_contains: {{who: ""}}}}
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "init",
        help="write a minimal config, its handlers and its test, ready to run",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("dir", metavar="DIR", nargs="?", default=".", help="folder (default: .)")
    parser.add_argument("--name", help="deployment name (default: from DIR's name)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.set_defaults(func=run)
    return parser


def _name_from(folder: Path) -> str:
    """A deployment name that is also a module name prefix: letters, digits, underscores."""
    base = re.sub(r"[^A-Za-z0-9_]+", "_", folder.resolve().name).strip("_").lower()
    if not base or not base[0].isalpha():
        base = f"topology_{base}".strip("_")
    return base


def files_for(name: str) -> dict[str, str]:
    """File name -> text of what ``init`` writes for deployment ``name``."""
    module = f"{name}_handlers"
    return {
        f"{name}.yaml": CONFIG.format(name=name, module=module),
        f"{module}.py": HANDLERS.format(name=name),
        f"{name}_test.yaml": TEST.format(name=name),
    }


def run(args: argparse.Namespace) -> int:
    from topology.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

    prog = "ponos-topology init"
    folder = Path(args.dir)
    name = args.name or _name_from(folder)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        print(f"{prog}: error: --name {name!r}: use letters, digits and _", file=sys.stderr)
        return EXIT_USAGE
    files = files_for(name)
    existing = [f for f in files if (folder / f).exists()]
    if existing and not args.force:
        print(
            f"{prog}: error: {', '.join(existing)} already in {folder}; --force overwrites",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for file, text in files.items():
            (folder / file).write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"{prog}: error: cannot write in {folder}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    config = folder / f"{name}.yaml"
    print(f"wrote {', '.join(str(folder / f) for f in files)}")
    print(f"next: ponos-topology run {config} --stop-when-idle 2")
    return EXIT_OK
