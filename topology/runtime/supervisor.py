"""Where :class:`Runtime` lived before it got a module named for it.

Kept so that code written against the old path keeps importing; new code
imports from :mod:`topology.runtime`.
"""

from topology.runtime.runtime import ApplyError, Runtime

__all__ = ["ApplyError", "Runtime"]
