"""Render every example config as mermaid and check it with mermaid 11 (parse + render).

    python tools/check_mermaid.py [--parse-only] [--fuzz N] [CONFIG...]

Without arguments: every ``configs/*.yaml`` plus ``tests/graph/nasty-names.yaml``
(names picked to break a diagram). Each is loaded with ``topology.config.load``
and rendered with ``topology.render.mermaid`` into ``tools/out/<name>.mmd``; then
``tools/check_mermaid.mjs`` parses each with mermaid in node (jsdom) and renders
it in headless Chromium. ``--fuzz N`` adds N topologies whose stream, topic
and sink names are random strings over mermaid's syntax characters, unicode
and whitespace (seeded: the same N gives the same diagrams). Exit 0 when all
pass, 1 otherwise.

Needs ``npm install`` in ``tools/`` (mermaid and jsdom from the npm registry) and,
for the render pass, Debian's ``chromium``. Not run in CI: it is the check that
the diagrams the product prints actually draw, run when rendering changes.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
OUT = TOOLS / "out"


def default_configs() -> list[Path]:
    examples = sorted(
        p for p in (ROOT / "configs").glob("*.yaml") if not p.name.endswith("_test.yaml")
    )
    return [*examples, ROOT / "tests" / "graph" / "nasty-names.yaml"]


#: Characters mermaid could read as syntax, plus letters, unicode and whitespace.
_FUZZ_CHARS = "abcxo _-.:;#&<>\"'`|%\\/()[]{}=+*!?~^$@,\n\t" + "éü流🚀ﬂ°¶ß\u00a0\u200b"


def fuzz_topologies(count: int, seed: int = 20261128) -> list[Any]:
    """``count`` small topologies with random names (a pattern sink, a topic sink, a cycle)."""
    from topology.config.model import SinkSpec, SourceSpec, StreamRef, StreamSpec, Topology

    rng = random.Random(seed)

    def name() -> str:
        return "".join(rng.choice(_FUZZ_CHARS) for _ in range(rng.randint(1, 10)))

    result = []
    for i in range(count):
        a, b, topic = name(), name() + "~b", name()
        sink, other = name(), name() + "~o"
        result.append(
            Topology(
                name=f"fuzz{i}",
                allow_cycles=True,
                streams={a: StreamSpec(a, topics=(topic, name())), b: StreamSpec(b)},
                sources={name(): SourceSpec("src", "h:g", a, topic=topic)},
                sinks={
                    sink: SinkSpec(
                        sink,
                        (StreamRef(a), StreamRef(b, "oldest")),
                        "h:f",
                        topic_pattern=name(),
                        consumers=rng.randint(1, 9),
                        outputs=(b,),
                        dead_letter=a,
                    ),
                    other: SinkSpec(other, (StreamRef(b),), "h:f", topic=topic, outputs=(a,)),
                },
            )
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", type=Path, help="configs (default: all examples)")
    parser.add_argument("--parse-only", action="store_true", help="skip the Chromium render pass")
    parser.add_argument("--fuzz", type=int, default=0, metavar="N", help="add N random-name graphs")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from topology.config import ConfigError, load
    from topology.graph import build
    from topology.render import mermaid

    if not (TOOLS / "node_modules" / "mermaid").is_dir():
        print("check_mermaid: run `npm install` in tools/ first", file=sys.stderr)
        return 2
    node = shutil.which("node")
    if node is None:
        print("check_mermaid: node is not on PATH", file=sys.stderr)
        return 2

    OUT.mkdir(parents=True, exist_ok=True)
    written = []
    failed = False
    for config in args.configs or default_configs():
        try:
            topology = load(config)
        except ConfigError as exc:
            print(f"FAIL load   {config}\n{exc}")
            failed = True
            continue
        target = OUT / f"{config.stem}.mmd"
        target.write_text(mermaid(build(topology)), encoding="utf-8")
        written.append(str(target))
    for topology in fuzz_topologies(args.fuzz):
        target = OUT / f"{topology.name}.mmd"
        target.write_text(mermaid(build(topology)), encoding="utf-8")
        written.append(str(target))
    if not written:
        return 1
    command = [node, str(TOOLS / "check_mermaid.mjs"), *written]
    if args.parse_only:
        command.insert(2, "--parse-only")
    result = subprocess.run(command, check=False)
    return 1 if failed or result.returncode != 0 else 0


if __name__ == "__main__":
    raise SystemExit(main())
