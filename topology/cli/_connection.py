"""What every command that talks to Redis shares: its flags, config loading, exit codes.

``run``, ``emit``, ``tail`` and ``status`` all take ``--redis-url`` and
``--data-dir``, exit 2 on an invalid config (printing the located problems) or
an unusable Redis URL, and exit 1 when Redis cannot be reached (a one-line
message, password masked).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from difflib import get_close_matches
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from topology.config.model import Topology
    from topology.runtime.signing import DeployKey

__all__ = [
    "add_connection_args",
    "deploy_key",
    "deployment_url_missing",
    "known_stream",
    "load_config",
    "run_command",
]


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        default=None,
        help="redis://, rediss:// or unix:// URL (default: $REDIS_URL, then the config's "
        "redis.url, then the embedded server)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="folder of the embedded server (default: .ponos-data beside CONFIG)",
    )


def load_config(path: str) -> Topology | None:
    """The validated config, or None after printing every problem on stderr.

    Handlers are not imported: adding or reading events must work on a machine
    that lacks the handlers' own dependencies. Warnings of a valid config are
    not repeated by every ``emit``/``tail``/``status``: ``validate`` shows them.
    """
    from topology.config import check

    topology, problems = check(path, import_callables=False)
    if topology is None:
        for problem in problems:
            print(problem, file=sys.stderr)
    return topology


def deployment_url_missing(cli_url: str | None, prog: str) -> bool:
    """True (after saying so) when a command given a deployment NAME has no Redis URL.

    Without a config file there is no folder for an embedded server: a
    deployment lives in a Redis that ``--redis-url`` or ``$REDIS_URL`` names.
    """
    from topology.runtime.connect import resolve_url

    if resolve_url(cli_url, None) is not None:
        return False
    print(
        f"{prog}: a deployment needs a Redis URL (--redis-url or $REDIS_URL): "
        "the embedded server belongs to a config file's folder",
        file=sys.stderr,
    )
    return True


def deploy_key(key_file: Path | None, prog: str) -> DeployKey | None:
    """The deploy key (``--deploy-key-file``, else ``$PONOS_DEPLOY_KEY``), or None.

    A key that was asked for but cannot be used is a usage error (exit 2): going
    on unsigned would publish, or run, what the operator meant to be signed.
    """
    from topology.cli import EXIT_USAGE
    from topology.runtime.signing import DeployKeyError, load_key

    try:
        key = load_key(key_file)
    except DeployKeyError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    if key_file is not None and Path(key_file).stat().st_mode & 0o077:
        print(
            f"{prog}: warning: the deploy key file {key_file} is readable by other users"
            f" (chmod 600 {key_file})",
            file=sys.stderr,
        )
    return key


def known_stream(topology: Topology, name: str, prog: str) -> bool:
    """True when ``name`` is a stream of the config; else say so (with a suggestion)."""
    if name in topology.streams:
        return True
    close = get_close_matches(name, list(topology.streams), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    known = ", ".join(sorted(topology.streams)) or "none"
    print(
        f"{prog}: error: unknown stream {name!r}{hint}; streams of {topology.name!r}: {known}",
        file=sys.stderr,
    )
    return False


#: How often a command told to stop by SIGTERM is cancelled again until it ends.
RECANCEL_EVERY = 2.0


async def _until_terminated(main: Callable[[], Awaitable[int]]) -> int:
    """``main()``, ended cleanly by SIGTERM (``docker stop``, systemd, ``kill``).

    Without this, SIGTERM would kill the process outright: an embedded server
    started for the command would die with it (parent-death signal) but leave
    its state file behind, and a ``tail --follow`` pipe would be cut mid-line.
    """
    task = asyncio.ensure_future(main())
    loop = asyncio.get_running_loop()
    terminated = False

    def on_term() -> None:
        nonlocal terminated
        terminated = True
        cancel()

    def cancel() -> None:
        # Again until it ends: a cancellation landing as redis-py starts a command
        # (connecting, or a wait_for around a write) can be swallowed by it.
        if not task.done():
            task.cancel()
            loop.call_later(RECANCEL_EVERY, cancel)

    try:
        loop.add_signal_handler(signal.SIGTERM, on_term)
    except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
        return await task
    try:
        return await task
    except asyncio.CancelledError:
        if terminated:
            return 0
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def run_command(main: Callable[[], Awaitable[int]], prog: str) -> int:
    """Run ``main`` in a fresh event loop; Redis being unreachable is exit 1, said plainly."""
    from redis.exceptions import RedisError

    from topology.cli import EXIT_FAILURE, EXIT_USAGE
    from topology.runtime.connect import RedisUnavailableError, RedisUrlError, redact_text
    from topology.runtime.logs import setup_logging

    # Warnings only, but through the redacting handler (never Python's bare fallback).
    setup_logging("text", level=logging.WARNING)
    try:
        return asyncio.run(_until_terminated(main))
    except RedisUrlError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RedisUnavailableError as exc:
        print(f"{prog}: error: {redact_text(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    except (RedisError, ConnectionError) as exc:  # lost the server after connecting
        reason = redact_text(str(exc)) or type(exc).__name__
        print(f"{prog}: error: Redis failed: {reason}", file=sys.stderr)
        return EXIT_FAILURE
