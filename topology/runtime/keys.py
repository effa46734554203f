"""Every Redis key the engine itself owns (stream keys belong to ``topology.streams``).

No other module spells an engine key by hand. All live under
``ponos:{<deployment>}:`` so one deployment's keys share a cluster hash slot and
``ponos:*`` finds them all.
"""

from __future__ import annotations

__all__ = ["EngineKeys"]

ROOT = "ponos"


class EngineKeys:
    """Key names for one deployment (the config's ``name``)."""

    __slots__ = ("base",)

    def __init__(self, deployment: str) -> None:
        self.base = f"{ROOT}:{{{deployment}}}"

    def attempts(self, sink: str) -> str:
        """Hash ``<stream>/<entry id>`` -> failed handler attempts; survives restarts."""
        return f"{self.base}:attempts:{sink}"

    def source_lease(self, source: str) -> str:
        """String holding the worker id that runs ``source`` (SET NX PX, renewed)."""
        return f"{self.base}:lease:source:{source}"

    def source_state(self, source: str) -> str:
        """Hash of a source's progress (e.g. ``done`` once its generator ended)."""
        return f"{self.base}:source:{source}"

    def workers(self) -> str:
        """Hash worker id -> JSON heartbeat (version, generation, pid, host, time)."""
        return f"{self.base}:workers"

    def config(self) -> str:
        """Hash of the current applied config (``apply``), watched by ``run --deployment``."""
        return f"{self.base}:config"

    def config_version(self, version: int) -> str:
        """Hash of one published version (text, source, sha256, time, signature): the history."""
        return f"{self.base}:config:v:{version}"

    def config_channel(self) -> str:
        """Pub/sub channel announcing a new applied config version."""
        return f"{self.base}:config-changed"

    def metrics(self, sink: str) -> str:
        """Hash of a sink's counters (handled, failed, dead-lettered, conflicts)."""
        return f"{self.base}:metrics:{sink}"
