"""Message bodies, kind by kind."""

from __future__ import annotations

from typing import Any

import pytest

from realtime.bodies import concerns, validate
from realtime.errors import BadRequest

REPORT: dict[str, Any] = {
    "kind": "daily_report",
    "child": 7,
    "date": "2026-11-25",
    "meals": [{"time": "11:30", "food": "Purée de carottes", "amount": "most"}],
    "naps": [{"start": "12:45", "end": "14:30"}],
    "nappies": [{"time": "10:00", "kind": "wet"}],
    "mood": "happy",
    "note": "Une belle journée",
}


def test_each_kind_is_kept_as_sent() -> None:
    assert validate({"kind": "text", "text": "Bonjour"}) == {"kind": "text", "text": "Bonjour"}
    announcement = {"kind": "announcement", "title": "Fermeture", "text": "Vendredi 12"}
    assert validate(announcement) == announcement
    assert validate(REPORT) == REPORT


def test_a_daily_report_may_be_short() -> None:
    assert validate({"kind": "daily_report", "child": 7, "date": "2026-11-25"}) == {
        "kind": "daily_report",
        "child": 7,
        "date": "2026-11-25",
        "meals": [],
        "naps": [],
        "nappies": [],
    }


@pytest.mark.parametrize(
    "change",
    [
        {"child": 0},
        {"child": True},
        {"child": "7"},
        {"date": "25/11/2026"},
        {"date": "2026-02-30"},
        {"meals": [{"time": "25:00", "food": "x", "amount": "all"}]},
        {"meals": [{"time": "11:30", "food": "x", "amount": "plenty"}]},
        {"meals": [{"time": "11:30", "food": "", "amount": "all"}]},
        {"meals": [{"time": "11:30", "food": "x", "amount": "all", "extra": 1}]},
        {"meals": "purée"},
        {"meals": [{"time": "11:30", "food": "x", "amount": "all"}] * 11},
        {"naps": [{"start": "14:00", "end": "13:00"}]},
        {"nappies": [{"time": "10:00", "kind": "blue"}]},
        {"mood": "ecstatic"},
        {"note": "x" * 2001},
        {"note": "nul \x00"},
        {"extra": "field"},
    ],
)
def test_a_malformed_daily_report_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(BadRequest) as refused:
        validate(REPORT | change)
    assert refused.value.code == "bad_body"


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "announcement", "text": "no title"},
        {"kind": "announcement", "title": "t" * 201, "text": "x"},
        {"kind": "announcement", "title": "t", "text": "x", "pinned": True},
        {"kind": "photo"},
        {"kind": ["text"]},
    ],
)
def test_malformed_bodies_of_other_kinds_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(BadRequest) as refused:
        validate(body)
    assert refused.value.code == "bad_body"


def test_a_daily_report_concerns_its_child() -> None:
    assert concerns(REPORT) == (7,)
    assert concerns({"kind": "text", "text": "x"}) == ()
