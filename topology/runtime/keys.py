"""Every Redis key the engine itself owns (stream keys belong to ``topology.streams``).

No other module spells an engine key by hand. All live under
``ponos:{<deployment>}:`` so one deployment's keys share a cluster hash slot and
``ponos:*`` finds them all.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["EngineKeys", "glob_escape", "hash_tag", "shared_hash_tag"]

ROOT = "ponos"


def hash_tag(key: str) -> str | None:
    """The part of ``key`` Redis Cluster hashes (``{...}``, Redis's own rule), or None."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:  # no closing brace, or "{}": the whole key is hashed
        return None
    return key[start + 1 : end]


def shared_hash_tag(keys: Iterable[str]) -> str | None:
    """The hash tag every one of ``keys`` has, or None when one has another or none."""
    tags = {hash_tag(key) for key in keys}
    if len(tags) != 1:
        return None
    return tags.pop()


def glob_escape(text: str) -> str:
    """``text`` matched literally by a ``SCAN MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _escape_sink(sink: str) -> str:
    # A sink named "a:b" and a key "c" must not share a name with sink "a", key "b:c".
    return sink.replace("%", "%25").replace(":", "%3A")


class EngineKeys:
    """Key names for one deployment (the config's ``name``)."""

    __slots__ = ("base", "deployment")

    def __init__(self, deployment: str) -> None:
        self.deployment = deployment
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

    def state_prefix(self, sink: str, tag: str | None = None) -> str:
        """What every state key of ``sink`` starts with; the state key follows it.

        One Redis key per state key (a hash: ``v`` its version, ``s`` its JSON):
        a million keys are a million small values, each with its own TTL. All of
        a sink's state sits in one cluster slot so one script can commit it:
        ``tag`` (the hash tag the sink's streams share, see
        :func:`shared_hash_tag`) puts it in the streams' slot, where the commit
        is atomic with the outputs and the acks; without one it is the
        deployment's slot.
        """
        # The deployment is named after the slot too: a tag only places the key.
        return f"{self._state_head(tag)}:state:{self.deployment}:{_escape_sink(sink)}:"

    def state(self, sink: str, key: str, tag: str | None = None) -> str:
        """Hash of one state key of ``sink``: ``v`` (version, absent = 0), ``s`` (JSON object)."""
        return self.state_prefix(sink, tag) + key

    def state_versions(self, sink: str, tag: str | None = None) -> str:
        """Counter of ``sink``'s state commits, in its state's slot: each write takes the next
        value as the key's version, so a key deleted (or expired) and written again never
        gets back a version a slow reader still holds."""
        return f"{self._state_head(tag)}:state-versions:{self.deployment}:{_escape_sink(sink)}"

    def _state_head(self, tag: str | None) -> str:
        return f"{ROOT}:{{{self.deployment if tag is None else tag}}}"
