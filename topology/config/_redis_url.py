"""Whether a Redis URL can be used, said without ever quoting it.

One check for the config's ``redis.url``, ``--redis-url`` and ``$REDIS_URL``: a
bad URL is a usage error (exit 2) found before any connection is tried. The
messages name the part that is wrong, never the URL itself, which may hold a
password.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["SCHEMES", "redis_url_problem"]

SCHEMES = ("redis", "rediss", "unix")


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable Redis URL, or None."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        shown = f"URL scheme {scheme!r}" if scheme else "URL without a scheme"
        if scheme and not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
            shown = "URL scheme"  # not a scheme at all: may be part of a secret
        return f"unsupported {shown} (use redis://, rediss:// or unix://)"
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL": quotes nothing of the URL
        return f"invalid URL: {exc}"
    try:
        port = parts.port
    except ValueError:  # its message quotes the text, which may be a password
        port = 0
    if port == 0:
        return "invalid URL: the port must be a number from 1 to 65535"
    if scheme == "unix" and not parts.path:
        return "a unix:// URL needs the socket's path (unix:///path/to/redis.sock)"
    return None
