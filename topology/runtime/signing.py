"""Signed deployment versions: only holders of the deploy key choose what workers run.

Anyone who can write to a deployment's Redis can write a config into it. With a
deploy key (``PONOS_DEPLOY_KEY``, or a file), ``apply`` signs each version it
publishes and a worker holding the same key runs only versions whose signature
verifies. The HMAC-SHA256 covers the deployment name, the version number and
the config text, so a signed text cannot be replayed under another number or
in another deployment. The key is a shared secret: it is never logged, printed,
or stored in Redis (:class:`DeployKey` does not show it in a ``repr`` either).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["KEY_ENV", "DeployKey", "DeployKeyError", "load_key"]

#: The environment variable that holds the key (the file flag wins over it).
KEY_ENV = "PONOS_DEPLOY_KEY"
#: Bumped if the signed message's layout ever changes, so old signatures fail plainly.
_DOMAIN = b"ponos-topology deployment v1\n"


class DeployKeyError(ValueError):
    """A key that cannot be used (unreadable or empty file); the message never holds the key."""


class DeployKey:
    """The secret that signs and verifies deployment versions."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise DeployKeyError("the deploy key is empty")
        self._secret = secret

    def __repr__(self) -> str:
        return "DeployKey(***)"

    def sign(self, deployment: str, version: int, text: str) -> str:
        """Hex HMAC-SHA256 of the version: what ``apply`` stores beside the text."""
        name = deployment.encode("utf-8")
        # Length-prefixed name and a line per field: no two inputs share a message.
        message = b"%s%d:%s\n%d\n%s" % (_DOMAIN, len(name), name, version, text.encode("utf-8"))
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def verifies(self, deployment: str, version: int, text: str, signature: str) -> bool:
        """True when ``signature`` is this key's for the version (constant-time compare)."""
        expected = self.sign(deployment, version, text)
        return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


def load_key(key_file: Path | None, env: Mapping[str, str] | None = None) -> DeployKey | None:
    """The deploy key from ``key_file`` (first) or ``$PONOS_DEPLOY_KEY``; None when neither is set.

    Surrounding whitespace is dropped (files end with a newline). Raises
    :class:`DeployKeyError` for an unreadable or empty file or variable.
    """
    environ = os.environ if env is None else env
    if key_file is not None:
        try:
            raw = Path(key_file).read_bytes()
        except OSError as exc:
            raise DeployKeyError(
                f"cannot read the deploy key file {key_file}: {exc.strerror or exc}"
            ) from None
        secret, where = raw.strip(), f"the deploy key file {key_file}"
    elif KEY_ENV in environ:
        secret, where = environ[KEY_ENV].strip().encode("utf-8"), f"${KEY_ENV}"
    else:
        return None
    if not secret:
        raise DeployKeyError(f"{where} is empty")
    return DeployKey(secret)
