"""Malformed URLs: whatever could be the secret is masked, and nothing after the URL is eaten."""

from __future__ import annotations

import pytest

from topology.redact import redact, redact_text


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # An unescaped '@' in the password: the user information ends at the last '@'.
        ("redis://user:s3c@ret@host", "redis://***@host"),
        ("redis://user:s3c@ret@host:6379/0", "redis://***@host:6379/0"),
        # Not a scheme anyone knows, '@@' and a port that is not one: still masked.
        ("garbage://s3cret@@:x", "garbage://***@:x"),
        ("http://a:b:c@h", "http://***@h"),
        # Does not parse (bad IPv6), but reads one way: the user name stays.
        ("redis://user:pw@[::1", "redis://user:***@[::1"),
        ("redis://u:p/ss@h:1/0", "redis://u:***@h:1/0"),
        ("redis://alice@db/0", "redis://alice@db/0"),
    ],
)
def test_malformed_urls_never_show_a_secret(url: str, expected: str) -> None:
    assert redact(url) == expected


def test_a_query_password_masks_its_value_and_nothing_after_it() -> None:
    text = "cannot use 'redis://h:1/0?password=s3cret', check --redis-url"
    assert redact_text(text) == "cannot use 'redis://h:1/0?password=***', check --redis-url"
    assert redact_text("redis://h?password=s3c other text") == "redis://h?password=*** other text"
    assert redact_text('{"url": "redis://u:pw@h"}') == '{"url": "redis://u:***@h"}'


def test_every_url_of_a_line_is_masked() -> None:
    out = redact_text("from redis://a:one@h1 to garbage://two@@:x and redis://x:thr@ee@h3")
    for secret in ("one", "two", "thr", "ee@"):
        assert secret not in out
