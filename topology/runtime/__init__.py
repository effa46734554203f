"""The engine at run time: a :class:`Runtime` applies plans to running actors and sources.

What a program running topologies uses: the runtime itself, what follows a
config file (:class:`Reloader`) or a published deployment
(:class:`DeploymentFollower`), the worker registry, and the process metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from topology._lazy import load_lazily

if TYPE_CHECKING:
    from topology.runtime.deployment import DeploymentFollower
    from topology.runtime.metrics import Metrics
    from topology.runtime.reload import Reloader
    from topology.runtime.runtime import ApplyError, Runtime
    from topology.runtime.workers import WorkerRegistry, new_worker_id

__all__ = [
    "ApplyError",
    "DeploymentFollower",
    "Metrics",
    "Reloader",
    "Runtime",
    "WorkerRegistry",
    "new_worker_id",
]

#: Where each public name lives. Imported on first use: the parent of a pool
#: (``topology.runtime.pool``) lives in this package and must stay small; it
#: never runs an actor.
_HOMES = {
    "DeploymentFollower": "deployment",
    "Metrics": "metrics",
    "Reloader": "reload",
    "ApplyError": "runtime",
    "Runtime": "runtime",
    "WorkerRegistry": "workers",
    "new_worker_id": "workers",
}


def __getattr__(name: str) -> Any:
    return load_lazily(__name__, _HOMES, name)


def __dir__() -> list[str]:
    return sorted(__all__)
