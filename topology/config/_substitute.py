"""``${VAR}``, ``${VAR:-default}`` and ``$$`` in scalar values, as a shell would.

Runs on each scalar while the document is built, so a problem still knows the
line and column of the ``${`` that caused it. A missing variable with no default
is an error, never a silent empty string or a literal ``${VAR}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["substitute"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def substitute(text: str, env: Mapping[str, str]) -> tuple[str, list[tuple[int, str]]]:
    """``text`` with variables replaced, and ``(offset, message)`` for each problem.

    ``${VAR:-default}`` uses the default when VAR is unset *or empty* (shell
    semantics), so ``REDIS_URL=`` behaves like no ``REDIS_URL``. A ``$`` not
    followed by ``{`` or ``$`` is kept as is.
    """
    out: list[str] = []
    problems: list[tuple[int, str]] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n or text[i + 1] not in "${":
            out.append(ch)
            i += 1
            continue
        if text[i + 1] == "$":
            out.append("$")
            i += 2
            continue
        end = text.find("}", i + 2)
        if end < 0:
            problems.append((i, "unterminated '${' (write '$$' for a literal '$')"))
            out.append(text[i:])
            break
        body = text[i + 2 : end]
        name, sep, default = body.partition(":-")
        if not _NAME.fullmatch(name):
            problems.append(
                (i, f"invalid substitution '${{{body}}}': expected ${{NAME}} or ${{NAME:-default}}")
            )
        elif sep:
            out.append(env.get(name) or default)
        elif name in env:
            out.append(env[name])
        else:
            problems.append(
                (
                    i,
                    f"environment variable {name!r} is not set and has no default",
                )
            )
        i = end + 1
    return "".join(out), problems
