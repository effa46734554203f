"""Names a package exports but imports on first use (PEP 562 ``__getattr__``).

A package whose public names sit in heavy modules (the engine, redis-py) keeps
light what only imports it for something else: the pool's parent, the CLI.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any


def load_lazily(package: str, homes: Mapping[str, str], name: str) -> Any:
    """``name`` from its module ``package.homes[name]``, kept on the package for next time."""
    home = homes.get(name)
    if home is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{package}.{home}"), name)
    setattr(sys.modules[package], name, value)
    return value
