"""A live web page of a running topology: the graph, its flow, lag and dead letters.

``ponos-topology dashboard CONFIG | --deployment NAME`` and ``run --ui-port``
serve it. The page renders the same mermaid diagram as ``graph`` with mermaid
itself shipped in ``static/`` (no CDN: it works on a network without
internet), and updates from server-sent events. One poller reads Redis once per
interval for every open page (``Hub``), through ``topology.observe.collect`` —
the numbers ``status`` and ``graph --live`` print. ``/api/snapshot`` serves
the same snapshot as JSON for scripts.
"""

from __future__ import annotations

from topology.dashboard._board import Board, from_file, from_published, from_runtime
from topology.dashboard._hub import Hub
from topology.dashboard._server import (
    DEFAULT_HOST,
    DEFAULT_INTERVAL,
    DEFAULT_PORT,
    DashboardServer,
    serve,
    warn_if_exposed,
)

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_INTERVAL",
    "DEFAULT_PORT",
    "Board",
    "DashboardServer",
    "Hub",
    "from_file",
    "from_published",
    "from_runtime",
    "serve",
    "warn_if_exposed",
]
