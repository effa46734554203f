"""``ponos-topology test [PATH ...]``: run ``*_test.yaml`` topology tests.

Each file names a config and lists tests: events given to streams, events
expected on streams once the topology is idle. Every test runs the real
topology on one throwaway server of the run (flushed between tests), or on
``--redis-url`` under a key prefix of its own. One ``PASS``/``FAIL`` line per
test (a diff under a failure), then ``N passed, M failed``. Exit 0 when all
passed, 1 when one failed, 2 when a test file or its config is invalid (its
problems located as ``validate`` locates them; the valid files still run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "test",
        help="run *_test.yaml topology tests on a throwaway server",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "paths",
        metavar="PATH",
        nargs="*",
        type=Path,
        help="test files or folders, searched recursively (default: the current folder)",
    )
    parser.add_argument(
        "--redis-url",
        help="run on this server (a unique key prefix per test, removed after) "
        "instead of a throwaway one",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="how long a test may take to become idle (default 30; a test's own timeout: wins)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "junit"),
        default="text",
        help="junit: also a JUnit XML report, to -o FILE or stdout (default: text)",
    )
    parser.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="with --format junit: write it here"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show the engine's warnings and errors"
    )
    parser.set_defaults(func=run)
    return parser


def _print_result(result: Any, out: TextIO) -> None:
    print(f"{'PASS' if result.passed else 'FAIL'} {result.id}", file=out)
    for line in result.diff:
        print(f"    {line}", file=out)
    out.flush()


def _seconds(text: str) -> float:
    """``--timeout``: a finite number of seconds above zero (argparse says so otherwise)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text}")
    return value


@contextlib.contextmanager
def _logs(verbose: bool) -> Iterator[None]:
    """The report is the output: engine and handler logs only with ``-v`` (redacted then)."""
    from topology.runtime.logs import setup_logging

    setup_logging("text", quiet=True, level=logging.WARNING)
    root = logging.getLogger()
    level, disabled = root.level, logging.root.manager.disable
    root.setLevel(logging.WARNING)
    if not verbose:
        logging.disable(logging.CRITICAL)
    try:
        yield
    finally:  # in-process callers (tests) get their logging back
        logging.disable(disabled)
        root.setLevel(level)


def _load(paths: list[Path]) -> tuple[list[Any], list[Any]] | None:
    """The valid test files and every problem found; None when there is nothing to run."""
    from topology.testing import check_test_file, find_test_files

    found, problems = find_test_files(paths or [Path.cwd()])
    if not found and not problems:
        where = ", ".join(str(p) for p in paths) or "the current folder"
        print(f"ponos-topology test: no *_test.yaml file under {where}", file=sys.stderr)
        return None
    files = []
    for path in found:
        test_file, more = check_test_file(path)
        problems.extend(more)
        if test_file is not None:
            files.append(test_file)
    for problem in problems:
        print(problem, file=sys.stderr)
    return files, problems


def _write_junit(args: argparse.Namespace, results: list[Any], invalid: list[Any]) -> bool:
    from topology.testing._junit import junit_xml

    xml = junit_xml(results, invalid)
    if args.output is None:
        sys.stdout.write(xml)
        return True
    try:
        args.output.write_text(xml, encoding="utf-8")
    except OSError as exc:
        print(
            f"ponos-topology test: cannot write {args.output}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return False
    return True


def run(args: argparse.Namespace) -> int:
    from topology.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
    from topology.redact import redact_text
    from topology.testing import DEFAULT_TIMEOUT, run_files

    timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    loaded = _load(args.paths)
    if loaded is None:
        return EXIT_USAGE
    files, problems = loaded
    invalid = [p for p in problems if p.is_error]
    # JUnit on stdout leaves the human report to stderr.
    out = sys.stderr if args.format == "junit" and args.output is None else sys.stdout
    results: list[Any] = []

    def report(result: Any) -> None:
        results.append(result)
        _print_result(result, out)

    ok = True
    with _logs(args.verbose):
        try:
            asyncio.run(run_files(files, redis_url=args.redis_url, timeout=timeout, report=report))
        except Exception as exc:  # the server would not start, the URL is unreachable...
            print(f"ponos-topology test: {redact_text(str(exc))}", file=sys.stderr)
            ok = False
    failed = sum(not r.passed for r in results)
    if args.format == "junit":
        ok = _write_junit(args, results, invalid) and ok
    print(f"{len(results) - failed} passed, {failed} failed", file=out)
    if invalid:
        return EXIT_USAGE
    return EXIT_FAILURE if failed or not ok else EXIT_OK
