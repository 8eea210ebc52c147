"""The WebSocket Origin check, case by case."""

from __future__ import annotations

import pytest

from realtime.origins import origin_allowed

HOST = "creche.example:8000"


@pytest.mark.parametrize(
    ("origin", "allowed", "expected"),
    [
        (None, (), True),  # not a browser
        ("http://creche.example:8000", (), True),  # our own page
        ("https://creche.example:8000", (), True),
        ("HTTP://CRECHE.EXAMPLE:8000", (), True),
        ("http://creche.example", (), False),  # another port is another origin
        ("http://evil.example", (), False),
        ("http://creche.example:8000.evil.example", (), False),  # look-alike
        ("http://evilcreche.example:8000", (), False),
        ("http://creche.example:8000@evil.example", (), False),
        ("null", (), False),
        ("", (), False),
        ("file://", (), False),
        ("ws://creche.example:8000", (), False),
        ("https://app.creche.example", ("https://app.creche.example",), True),
        ("https://app.creche.example/", ("https://app.creche.example",), False),
        ("https://other.example", ("https://app.creche.example",), False),
        ("https://anything.example", ("*",), True),
        ("null", ("*",), True),
    ],
)
def test_origin(origin: str | None, allowed: tuple[str, ...], expected: bool) -> None:
    assert origin_allowed(origin, HOST, allowed) is expected


def test_without_a_host_only_listed_origins_pass() -> None:
    assert origin_allowed("http://creche.example:8000", None, ()) is False
    assert origin_allowed("https://app.example", None, ("https://app.example",)) is True
