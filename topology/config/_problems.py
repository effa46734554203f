"""Located problems: what every check in this package reports.

One ``Problem`` is one line of output, ``FILE:LINE:COL: PATH: message``. Lines
and columns are 1-based (as editors count) and always >= 1, even for a file
that cannot be read, so tools that jump to ``file:line:col`` never choke.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["ConfigError", "NodePath", "Problem", "format_path"]

NodePath = tuple[
    str | int, ...
]  # a node's place in the document: ("sinks", "enrich", "streams", 0)

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def format_path(path: NodePath) -> str:
    """``sinks.enrich.streams[0]``; keys that would read ambiguously are quoted."""
    if not path:
        return "(root)"
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _BARE_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    col: int
    path: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        label = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}:{self.col}: {self.path}: {label}{self.message}"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` holds every error and warning found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)
