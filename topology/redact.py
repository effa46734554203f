"""Passwords never printed: the one masking rule for logs, status, errors and diagrams.

It lives outside the runtime because rendering and the CLI need it too, and
nothing upstream of the runtime may import it.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact", "redact_text"]

MASK = "***"

# A URL in free text: scheme:// up to the next space or quote (a URL quoted in a
# message ends at its quote; an unescaped quote in a password is over-masked).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"`<>]*")
# password=... anywhere (redis-py accepts the password as a URL query parameter).
_QUERY_PW = re.compile(r"(?P<head>\b(?:password|passwd|pass|pwd)=)[^&\s#'\"`<>]*", re.IGNORECASE)


def _mask_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    # The user information ends at the last '@': a password may hold '/', '?' or
    # '@' unescaped. An '@' later in the URL is over-masked, never leaked.
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    if "@" in userinfo or userinfo.count(":") > 1:
        # Ambiguous (two '@', a stray ':'): any part of what precedes the last
        # '@' may be the secret, so none of it is shown.
        return f"{scheme}://{MASK}@{host}"
    user, colon, password = userinfo.partition(":")
    return f"{scheme}://{user}:{MASK}@{host}" if colon and password else url


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``.

    A URL whose user information reads one way keeps its user name
    (``redis://alice:***@db``); one that does not (``user:s3c@ret@db``) loses
    everything before its last ``@`` (``redis://***@db``): the secret may be
    anywhere in it.
    """
    if "://" not in text and "=" not in text:
        return text
    if "://" in text:
        text = _URL.sub(lambda m: _mask_url(m[0]), text)
    return _QUERY_PW.sub(lambda m: f"{m['head']}{MASK}", text)


def redact(url: str) -> str:
    """``redis://user:***@host:6379/0``: the URL with its password masked, for humans.

    Done on the text, not by parsing and re-assembling the URL: a malformed URL
    (an unescaped ``/`` or ``@`` in the password) is over-masked, never leaked.
    """
    return redact_text(url)
