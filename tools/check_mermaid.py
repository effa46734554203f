"""Render every example config as mermaid and check it with mermaid 11 (parse + render).

    python tools/check_mermaid.py [--parse-only] [CONFIG...]

Without arguments: every ``configs/*.yaml`` plus ``tests/graph/nasty-names.yaml``
(names picked to break a diagram). Each is loaded with ``topology.config.load``
and rendered with ``topology.render.mermaid`` into ``tools/out/<name>.mmd``; then
``tools/check_mermaid.mjs`` parses each with mermaid in node (jsdom) and renders
it in headless Chromium. Exit 0 when all pass, 1 otherwise.

Needs ``npm install`` in ``tools/`` (mermaid and jsdom from the npm registry) and,
for the render pass, Debian's ``chromium``. Not run in CI: it is the check that
the diagrams the product prints actually draw, run when rendering changes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
OUT = TOOLS / "out"


def default_configs() -> list[Path]:
    examples = sorted((ROOT / "configs").glob("*.yaml"))
    return [*examples, ROOT / "tests" / "graph" / "nasty-names.yaml"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", type=Path, help="configs (default: all examples)")
    parser.add_argument("--parse-only", action="store_true", help="skip the Chromium render pass")
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
    if not written:
        return 1
    command = [node, str(TOOLS / "check_mermaid.mjs"), *written]
    if args.parse_only:
        command.insert(2, "--parse-only")
    result = subprocess.run(command, check=False)
    return 1 if failed or result.returncode != 0 else 0


if __name__ == "__main__":
    raise SystemExit(main())
