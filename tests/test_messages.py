"""Messages: the msgpack record Redis carries, the frame clients get, body validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.errors import BadRequest
from realtime.messages import MAX_TEXT, Author, Message, pack_record, unpack_record, validate_body

AT = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)


FIELDS: dict[str, Any] = {
    "id": "0195e1a2-7b3c-7def-8123-456789abcdef",
    "channel": "family:42",
    "author": Author(7, "Camille"),
    "body": {"kind": "text", "text": "Bonjour"},
    "at": AT,
    "msg_id": "client-msg-0001",
}


def record(**changes: Any) -> bytes:
    return pack_record(**(FIELDS | changes))


def test_record_round_trip() -> None:
    message = unpack_record(12, record(children=(3, 5)))
    assert message == Message(
        id="0195e1a2-7b3c-7def-8123-456789abcdef",
        channel="family:42",
        seq=12,
        author=Author(7, "Camille"),
        body={"kind": "text", "text": "Bonjour"},
        at=AT,
        msg_id="client-msg-0001",
        children=(3, 5),
        withdrawn=False,
    )
    assert message.at.tzinfo is UTC


def test_record_round_trip_keeps_non_ascii() -> None:
    author = Author(2**40, "Zoé Ørsted-Łukasiewicz 👩‍🍼")
    body = {"kind": "text", "text": "Goûter : crêpes 🥞, siesta 😴 — 午睡"}
    message = unpack_record(1, record(author=author, body=body, channel="child:9"))
    assert message.author == author
    assert message.body == body
    assert message.channel == "child:9"


def test_record_without_children() -> None:
    assert unpack_record(1, record()).children == ()


def test_record_does_not_carry_the_sequence() -> None:
    data = record()
    assert unpack_record(1, data).seq == 1
    assert unpack_record(99, data).seq == 99


@given(
    at=st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9000, 1, 1), timezones=st.just(UTC)),
    children=st.lists(st.integers(min_value=1, max_value=2**63 - 1), max_size=10).map(tuple),
    text=st.text(min_size=1),
    name=st.text(),
)
def test_record_round_trip_property(at: datetime, children: tuple[int, ...], text: str, name: str) -> None:
    body = {"kind": "text", "text": text}
    message = unpack_record(5, record(at=at, children=children, body=body, author=Author(1, name)))
    assert (message.at, message.children, message.body, message.author.name) == (at, children, body, name)


def test_record_converts_other_timezones_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    message = unpack_record(1, record(at=AT.astimezone(paris)))
    assert message.at == AT
    assert message.at.tzinfo is UTC


@pytest.mark.parametrize(
    "at",
    [
        datetime(2004, 1, 10, 14, 36, 12, 167389, tzinfo=UTC),
        datetime(2039, 8, 26, 9, 7, 51, 982660, tzinfo=UTC),
    ],
)
def test_record_keeps_every_microsecond(at: datetime) -> None:
    assert unpack_record(1, record(at=at)).at == at


def message(**changes: Any) -> Message:
    return Message(**(FIELDS | {"id": "m1", "seq": 3} | changes))


def test_frame_format() -> None:
    assert message().frame() == {
        "op": "message",
        "channel": "family:42",
        "seq": 3,
        "id": "m1",
        "author": {"id": 7, "name": "Camille"},
        "body": {"kind": "text", "text": "Bonjour"},
        "at": "2025-03-14T09:26:53.589793Z",
    }


def test_frame_at_ends_with_z_even_without_microseconds() -> None:
    frame = message(at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)).frame()
    assert frame["at"] == "2025-01-02T03:04:05Z"
    assert datetime.fromisoformat(frame["at"]) == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_frame_of_an_unpacked_record_ends_with_z() -> None:
    at = unpack_record(1, record()).frame()["at"]
    assert at.endswith("Z")
    assert "+" not in at


def test_frame_flags_withdrawn_only_when_true() -> None:
    assert "withdrawn" not in message().frame()
    assert "withdrawn" not in message(withdrawn=False).frame()
    assert message(withdrawn=True).frame()["withdrawn"] is True


def test_frame_names_the_tagged_children_but_not_the_client_msg_id() -> None:
    frame = message(children=(1, 2)).frame()
    assert "msg_id" not in frame
    assert frame["children"] == [1, 2]
    assert "children" not in message().frame()


@pytest.mark.parametrize(
    "text",
    ["Bonjour", "x", "  padded  ", "é" * MAX_TEXT, "line\nbreak", "👶" * 100],
)
def test_validate_body_accepts(text: str) -> None:
    assert validate_body({"kind": "text", "text": text}) == {"kind": "text", "text": text}


def test_validate_body_returns_a_new_dict() -> None:
    body = {"kind": "text", "text": "Bonjour"}
    validated = validate_body(body)
    assert validated == body
    assert validated is not body


@pytest.mark.parametrize(
    "body",
    [
        None,
        "Bonjour",
        ["text", "Bonjour"],
        42,
        {},
        {"text": "Bonjour"},
        {"kind": "image", "text": "Bonjour"},
        {"kind": "TEXT", "text": "Bonjour"},
        {"kind": None, "text": "Bonjour"},
        {"kind": "text"},
        {"kind": "text", "text": ""},
        {"kind": "text", "text": "   \n\t "},
        {"kind": "text", "text": None},
        {"kind": "text", "text": 42},
        {"kind": "text", "text": ["Bonjour"]},
        {"kind": "text", "text": "x" * (MAX_TEXT + 1)},
        {"kind": "text", "text": "Bonjour", "extra": 1},
        {"kind": "text", "text": "Bonjour", "media": []},
    ],
)
def test_validate_body_refuses(body: object) -> None:
    with pytest.raises(BadRequest) as refused:
        validate_body(body)
    assert refused.value.code == "bad_body"


@pytest.mark.parametrize("kind", [["text"], {"text": 1}])
def test_validate_body_refuses_unhashable_kind(kind: object) -> None:
    with pytest.raises(BadRequest) as refused:
        validate_body({"kind": kind, "text": "Bonjour"})
    assert refused.value.code == "bad_body"
