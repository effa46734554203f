"""The fault proxy does what the failure tests rely on it to do."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest
import redis

from tests.proxy import TcpProxy


def _client(proxy: TcpProxy, timeout: float | None = 2.0) -> redis.Redis:
    return redis.Redis.from_url(proxy.url, socket_timeout=timeout, retry=None)


def test_proxy_forwards_commands(proxy: TcpProxy) -> None:
    client = _client(proxy)
    assert client.set("k", "v")
    assert client.get("k") == b"v"
    assert proxy.open_links() == 1
    client.close()


def test_stall_freezes_open_connections_and_lets_new_ones_through(proxy: TcpProxy) -> None:
    stuck = _client(proxy, timeout=0.5)
    assert stuck.ping()
    assert proxy.stall() == 1
    with pytest.raises(redis.TimeoutError):
        stuck.get("k")
    fresh = _client(proxy)
    assert fresh.set("k", "after")
    assert fresh.get("k") == b"after"
    stuck.close()
    fresh.close()


def test_a_stalled_connection_stays_open(proxy: TcpProxy) -> None:
    sock = socket.create_connection(("127.0.0.1", proxy.port))
    sock.sendall(b"PING\r\n")
    assert sock.recv(100) == b"+PONG\r\n"
    proxy.stall()
    sock.sendall(b"PING\r\n")
    sock.settimeout(0.3)
    with pytest.raises(socket.timeout):
        sock.recv(100)  # neither an answer nor a close: the path is stuck
    assert proxy.open_links() == 1
    sock.close()


def test_refused_connections_are_closed_at_once(proxy: TcpProxy) -> None:
    proxy.refuse(True)
    with pytest.raises(redis.ConnectionError):
        _client(proxy).ping()
    proxy.refuse(False)
    assert _client(proxy).ping()


def test_cut_resets_open_connections(proxy: TcpProxy) -> None:
    sock = socket.create_connection(("127.0.0.1", proxy.port))
    sock.sendall(b"PING\r\n")
    assert sock.recv(100) == b"+PONG\r\n"
    assert proxy.cut() == 1
    sock.settimeout(2)
    with contextlib.suppress(ConnectionResetError):  # a reset is as good as a close
        assert sock.recv(100) == b""  # closed by the proxy, not left hanging
    sock.close()
    assert _client(proxy).ping()  # a new connection works


def test_delay_holds_each_chunk(proxy: TcpProxy) -> None:
    client = _client(proxy)
    assert client.ping()
    proxy.delay(0.2)
    started = time.monotonic()
    assert client.ping()
    assert time.monotonic() - started >= 0.2  # the request and the reply are each held
    proxy.delay(0)
