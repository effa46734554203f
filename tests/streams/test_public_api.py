"""What code outside the library (the engine's actor) uses is public, under stable names."""

from __future__ import annotations

from topology import streams


def test_helpers_the_engine_uses_are_public() -> None:
    assert set(streams.__all__) >= {"RETRYABLE_ERRORS", "decode_entry", "event_filter"}
    assert streams.decode_entry([b"n", b"e", b"p", b"x", b"t", b"t1"], "s", "1-0") == (
        "e",
        b"x",
        "t1",
        None,
    )
    accept = streams.event_filter(None, "a.*", None)
    assert accept is not None
