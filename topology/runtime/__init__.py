"""The engine at run time: a :class:`Runtime` applies plans to running actors and sources.

What a program running topologies uses: the runtime itself, what follows a
config file (:class:`Reloader`) or a published deployment
(:class:`DeploymentFollower`), the worker registry, and the process metrics.
"""

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
