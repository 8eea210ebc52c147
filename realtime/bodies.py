"""Message bodies, kind by kind: each field checked, anything unknown refused. Pure.

text          {"kind": "text", "text": str}
announcement  {"kind": "announcement", "title": str, "text": str}
daily_report  {"kind": "daily_report", "child": id, "date": "YYYY-MM-DD", "meals": [...],
               "naps": [...], "nappies": [...], "mood": str?, "note": str?}
media         {"kind": "media", "media": [media id, ...], "text": str?, "no_child_identifiable": true?}
               (the gateway replaces each id by the media's description once it is checked)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from realtime.errors import BadRequest

MAX_TEXT = 10_000
MAX_TITLE = 200
MAX_NOTE = 2_000
MAX_MEDIA = 20
MEDIA_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIME = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
AMOUNTS = ("none", "little", "half", "most", "all")
NAPPIES = ("wet", "dirty", "both")
MOODS = ("happy", "calm", "tired", "upset", "unwell")


def _bad(message: str) -> BadRequest:
    return BadRequest(message, code="bad_body")


def _text(value: object, name: str, limit: int, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _bad(f"'{name}' must be a non-empty string")
    if len(value) > limit:
        raise _bad(f"'{name}' is longer than {limit} characters")
    if "\x00" in value:
        # PostgreSQL's jsonb cannot store U+0000.
        raise _bad(f"'{name}' must not contain U+0000")
    return value


def _only(body: Mapping[str, object], allowed: set[str]) -> None:
    if set(body) - allowed:
        # key=repr: msgpack lets bytes keys through beside str ones, which do not compare.
        raise _bad(f"unknown fields in body: {sorted(set(body) - allowed, key=repr)}")


def _choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _bad(f"'{name}' must be one of {list(choices)}")
    assert isinstance(value, str)
    return value


def _time(value: object, name: str) -> str:
    if not isinstance(value, str) or not TIME.fullmatch(value):
        raise _bad(f"'{name}' must be a time HH:MM")
    return value


def _items(value: object, name: str, limit: int, check: Callable[[Mapping[str, object]], dict[str, Any]]) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > limit or not all(isinstance(v, dict) for v in value):
        raise _bad(f"'{name}' must be a list of at most {limit} objects")
    return [check(v) for v in value]


def text(body: Mapping[str, object]) -> dict[str, Any]:
    _only(body, {"kind", "text"})
    return {"kind": "text", "text": _text(body.get("text"), "text", MAX_TEXT)}


def announcement(body: Mapping[str, object]) -> dict[str, Any]:
    _only(body, {"kind", "title", "text"})
    return {
        "kind": "announcement",
        "title": _text(body.get("title"), "title", MAX_TITLE),
        "text": _text(body.get("text"), "text", MAX_TEXT),
    }


def _meal(item: Mapping[str, object]) -> dict[str, Any]:
    _only(item, {"time", "food", "amount"})
    return {
        "time": _time(item.get("time"), "meals[].time"),
        "food": _text(item.get("food"), "meals[].food", MAX_TITLE),
        "amount": _choice(item.get("amount"), "meals[].amount", AMOUNTS),
    }


def _nap(item: Mapping[str, object]) -> dict[str, Any]:
    _only(item, {"start", "end"})
    start, end = _time(item.get("start"), "naps[].start"), _time(item.get("end"), "naps[].end")
    if end <= start:
        raise _bad("a nap ends after it starts")
    return {"start": start, "end": end}


def _nappy(item: Mapping[str, object]) -> dict[str, Any]:
    _only(item, {"time", "kind"})
    return {
        "time": _time(item.get("time"), "nappies[].time"),
        "kind": _choice(item.get("kind"), "nappies[].kind", NAPPIES),
    }


def daily_report(body: Mapping[str, object]) -> dict[str, Any]:
    _only(body, {"kind", "child", "date", "meals", "naps", "nappies", "mood", "note"})
    child = body.get("child")
    if isinstance(child, bool) or not isinstance(child, int) or child <= 0:
        raise _bad("'child' must be the id of the child the report is about")
    day = body.get("date")
    try:
        date.fromisoformat(day if isinstance(day, str) and len(day) == 10 else "")
    except ValueError:
        raise _bad("'date' must be a date YYYY-MM-DD") from None
    report: dict[str, Any] = {
        "kind": "daily_report",
        "child": child,
        "date": day,
        "meals": _items(body.get("meals"), "meals", 10, _meal),
        "naps": _items(body.get("naps"), "naps", 5, _nap),
        "nappies": _items(body.get("nappies"), "nappies", 20, _nappy),
    }
    if body.get("mood") is not None:
        report["mood"] = _choice(body.get("mood"), "mood", MOODS)
    if (note := _text(body.get("note"), "note", MAX_NOTE, required=False)) is not None:
        report["note"] = note
    return report


def media(body: Mapping[str, object]) -> dict[str, Any]:
    _only(body, {"kind", "media", "text", "no_child_identifiable"})
    ids = body.get("media")
    if (
        not isinstance(ids, list)
        or not 1 <= len(ids) <= MAX_MEDIA
        or not all(isinstance(i, str) and MEDIA_ID.fullmatch(i) for i in ids)
        or len(set(ids)) != len(ids)
    ):
        raise _bad(f"'media' must list 1 to {MAX_MEDIA} distinct media ids (from POST /api/media)")
    checked: dict[str, Any] = {"kind": "media", "media": ids}
    if (caption := _text(body.get("text"), "text", MAX_TEXT, required=False)) is not None:
        checked["text"] = caption
    confirmed = body.get("no_child_identifiable")
    if confirmed is not None and confirmed is not True:
        raise _bad("'no_child_identifiable' is true, or absent")
    if confirmed:
        checked["no_child_identifiable"] = True
    return checked


KINDS: dict[str, Callable[[Mapping[str, object]], dict[str, Any]]] = {
    "text": text,
    "announcement": announcement,
    "daily_report": daily_report,
    "media": media,
}


def validate(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _bad("body must be an object")
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise _bad(f"body kind must be one of {sorted(KINDS)}")
    return KINDS[kind](body)


def concerns(body: Mapping[str, Any]) -> tuple[int, ...]:
    """The child a body is about by its nature (a daily report), beyond the tags."""
    return (body["child"],) if body.get("kind") == "daily_report" else ()
