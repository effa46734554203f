"""The embedded default: a real Valkey server in a data folder beside the config.

With no Redis URL anywhere, ``run`` (and ``emit``/``tail``/``status``) start a
``valkey-server`` through :class:`topology.server.ServerProcess` — the same
launcher the test fixtures use, so what the tests exercise is what users run.

The folder (``<config folder>/.ponos-data`` by default) holds:

- ``appendonlydir/``: the append-only file, so stopping and restarting loses nothing;
- ``valkey.sock``: the unix socket (when the path fits the 107-byte limit);
- ``server.json`` (mode 0600): pid, port, socket, password and owner of the
  live server, so another command on the same config finds and reuses it
  instead of starting a second server on the same files;
- ``server.conf`` (mode 0600): the server's random password. The loopback port
  is reachable by every local user; without the password they get ``NOAUTH``;
- ``server.lock``: an ``flock`` held while starting, so two commands started at
  the same moment cannot both start a server on the same AOF.

The server dies with the process that started it, even on ``kill -9``
(``PR_SET_PDEATHSIG``). The kernel sends that signal when the *thread* that
forked the child exits, so :meth:`EmbeddedServer.start` must run on a thread that
lives as long as the server (the main thread): never call it through
``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from topology.server import ServerNotFoundError, ServerProcess, ServerStartError

__all__ = [
    "DATA_DIR_NAME",
    "EmbeddedServer",
    "EmbeddedServerError",
    "EmbeddedServerRunning",
    "default_data_dir",
]

log = logging.getLogger(__name__)

#: Folder created beside the config file when no ``--data-dir`` is given.
DATA_DIR_NAME = ".ponos-data"
STATE_FILE = "server.json"
CONF_FILE = "server.conf"  # written by ServerProcess when it has a password
LOCK_FILE = "server.lock"
SOCKET_FILE = "valkey.sock"
#: sun_path is 108 bytes including the terminating NUL on Linux.
_MAX_SOCKET_PATH = 107


class EmbeddedServerError(RuntimeError):
    """The embedded server cannot be had (no binary, or it would not start)."""


class EmbeddedServerRunning(EmbeddedServerError):
    """Another process already runs the server of this data folder: reuse ``url``."""

    def __init__(self, message: str, url: str, info: dict[str, Any]) -> None:
        super().__init__(message)
        self.url = url
        self.info = info


def default_data_dir(config_path: Path | None) -> Path:
    """``<config folder>/.ponos-data``: data lives beside the config it belongs to,
    so two pipelines in two folders never share (or clobber) a server."""
    base = Path(config_path).resolve().parent if config_path is not None else Path.cwd()
    return base / DATA_DIR_NAME


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # a zombie still answers kill(0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


def _read_state(data_dir: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("pid"), int) else None


def _url(socket_path: str | None, port: int | None, password: str | None) -> str:
    auth = f":{password}@" if password else ""
    if socket_path:
        return f"unix://{auth}{quote(socket_path)}"
    return f"redis://{auth}127.0.0.1:{port}/0"


def _state_url(state: dict[str, Any]) -> str:
    return _url(state.get("socket"), state.get("port"), state.get("password"))


def _serves_dir(state: dict[str, Any], data_dir: Path) -> bool:
    """True when the recorded server answers and keeps its files in ``data_dir``.

    A live pid and an open port are not enough: after a crash the pid and the port
    may both have been reused by something else. ``CONFIG GET dir`` proves it is
    our server.
    """
    import redis

    try:
        client = redis.Redis.from_url(_state_url(state), socket_timeout=2, socket_connect_timeout=2)
        try:
            reply: dict[Any, Any] = dict(client.config_get("dir"))
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False
    served = reply.get("dir") or reply.get(b"dir")
    if isinstance(served, bytes):
        served = served.decode(errors="replace")
    try:
        return served is not None and Path(served).resolve() == data_dir.resolve()
    except OSError:
        return False


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the AOF holds every event
    with open(data_dir / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class EmbeddedServer:
    """One ``valkey-server`` with append-only persistence, owned by this process."""

    def __init__(self, data_dir: Path, *, owner: bool = True, binary: str | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.owner = owner
        self.binary = binary
        self._process: ServerProcess | None = None

    @property
    def url(self) -> str:
        """The unix socket when there is one (local, faster, mode 0700), else the port."""
        if self._process is None:
            raise EmbeddedServerError("the embedded server is not running")
        process = self._process
        socket_path = str(process.unixsocket) if process.unixsocket is not None else None
        return _url(socket_path, process.port, process.password)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @classmethod
    def running(cls, data_dir: Path) -> str | None:
        """URL of a live server recorded in ``data_dir``, or None."""
        info = cls.running_info(data_dir)
        return info["url"] if info is not None else None

    @classmethod
    def running_info(cls, data_dir: Path) -> dict[str, Any] | None:
        """The recorded state (pid, port, socket, owner, url) of a live server in ``data_dir``."""
        data_dir = Path(data_dir).resolve()
        state = _read_state(data_dir)
        if state is None or not _pid_alive(state["pid"]):
            return None
        if not _serves_dir(state, data_dir):
            return None
        return {**state, "url": _state_url(state)}

    def _socket_path(self) -> Path | None:
        path = self.data_dir / SOCKET_FILE
        return path if len(str(path).encode()) <= _MAX_SOCKET_PATH else None

    def _clean_stale(self) -> None:
        """Remove what a server killed without a chance to clean up left behind."""
        for name in (STATE_FILE, SOCKET_FILE, CONF_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / name).unlink()

    def start(self) -> str:
        """Start the server (or return the URL of the one already started) and record it.

        Raises :class:`EmbeddedServerError` naming ``--redis-url`` when no binary
        is available or the server does not come up.
        """
        if self._process is not None:
            return self.url
        if threading.current_thread() is not threading.main_thread():
            log.warning(
                "embedded server started from thread %r: it dies when that thread ends "
                "(PR_SET_PDEATHSIG follows the forking thread)",
                threading.current_thread().name,
            )
        with _locked(self.data_dir):
            state = _read_state(self.data_dir)
            if state is not None and _pid_alive(state["pid"]) and _serves_dir(state, self.data_dir):
                raise EmbeddedServerRunning(
                    f"an embedded server (pid {state['pid']}) already serves {self.data_dir}; "
                    "reuse it (EmbeddedServer.running) instead of starting another",
                    _state_url(state),
                    state,
                )
            if state is not None:
                log.info(
                    "cleaning stale embedded server state in %s (pid %s is gone)",
                    self.data_dir,
                    state.get("pid"),
                )
            self._clean_stale()
            ignore = self.data_dir / ".gitignore"
            if not ignore.exists():  # server data, not source: keep it out of the user's repo
                ignore.write_text("# created by ponos-topology: embedded server data\n*\n")
            process = ServerProcess(
                self.data_dir,
                unixsocket=self._socket_path(),
                appendonly=True,
                binary=self.binary,
                password=secrets.token_urlsafe(24),
            )
            try:
                process.start()
            except ServerNotFoundError as exc:
                message = str(exc)
                if "--redis-url" not in message:
                    message += "; or point at an existing server with --redis-url"
                raise EmbeddedServerError(message) from None
            except (ServerStartError, OSError) as exc:
                raise EmbeddedServerError(
                    f"the embedded Redis server in {self.data_dir} would not start: {exc}; "
                    "see its server.log there, or pass --redis-url"
                ) from None
            self._process = process
            state = {
                "pid": process.pid,
                "port": process.port,
                "socket": str(process.unixsocket) if process.unixsocket else None,
                "password": process.password,
                "owner": self.owner,
                "parent": os.getpid(),
                "started": time.time(),
            }
            tmp = self.data_dir / f".{STATE_FILE}.{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the password
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(state))
            tmp.replace(self.data_dir / STATE_FILE)
        log.info("embedded Redis server started (pid %s) in %s", process.pid, self.data_dir)
        return self.url

    def stop(self) -> None:
        """SIGTERM the server (it flushes its append-only file) and forget it."""
        process, self._process = self._process, None
        if process is None:
            return
        pid = process.pid
        with _locked(self.data_dir):
            process.stop()
            state = _read_state(self.data_dir)
            if state is not None and state.get("pid") == pid:
                self._clean_stale()
        log.info("embedded Redis server stopped (%s)", self.data_dir)

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
