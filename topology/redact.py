"""Passwords never printed: the one masking rule for logs, status, errors and diagrams.

It lives outside the runtime because rendering and the CLI need it too, and
nothing upstream of the runtime may import it.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact", "redact_text"]

MASK = "***"

# scheme://user:password@  (user may be empty). The password part is greedy up
# to the last '@' of the token: an unescaped '@' in a password is over-redacted,
# never leaked.
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@/\s]*):(?P<pw>[^@\s]*)@")
# password=... anywhere (redis-py accepts the password as a URL query parameter)
_QUERY_PW = re.compile(r"(?P<head>\b(?:password|passwd|pass|pwd)=)[^&\s#]*", re.IGNORECASE)


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@" if m["pw"] else m[0], text)
    return _QUERY_PW.sub(lambda m: f"{m['head']}{MASK}", text)


def redact(url: str) -> str:
    """``redis://user:***@host:6379/0``: the URL with its password masked, for humans.

    Done on the text, not by parsing and re-assembling the URL: a malformed URL
    (an unescaped ``/`` or ``@`` in the password) is over-masked, never leaked.
    """
    return redact_text(url)
