"""The messages table as the persistence worker writes it: rows read straight from ingest
records (`record_row`), inserted in one statement whose columns PostgreSQL completes (the
time from µs since the epoch, the kind from the body); what resume reads back must be
exactly what was published."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.message_store import MessageRow, MessageStore, record_row
from realtime.messages import Author, Message, pack_record, unpack_record

AT = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)

texts = st.text(max_size=40)
bodies = st.dictionaries(st.text(max_size=10), st.one_of(texts, st.integers(-(2**63), 2**63 - 1)), max_size=4)


def record(message: Message) -> bytes:
    return pack_record(
        id=message.id,
        channel=message.channel,
        author=message.author,
        body=message.body,
        at=message.at,
        msg_id=message.msg_id,
        children=message.children,
    )


def row(message: Message) -> MessageRow:
    return record_row(message.seq, record(message))


def message(n: int, **changes: Any) -> Message:
    fields: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "channel": "family:1",
        "seq": n,
        "author": Author(0, "Nobody"),
        "body": {"kind": "text", "text": f"m{n}"},
        "at": AT + timedelta(microseconds=n),
        "msg_id": f"msg-{n:04d}",
    }
    return Message(**(fields | changes))


@given(
    seq=st.integers(1, 2**63 - 1),
    author_id=st.integers(0, 2**63 - 1),
    name=texts,
    body=bodies,
    at=st.datetimes(timezones=st.just(UTC)),
    msg_id=texts,
    children=st.lists(st.integers(1, 2**63 - 1), max_size=5).map(tuple),
)
def test_a_row_holds_what_unpack_record_reads(
    seq: int, author_id: int, name: str, body: dict[str, Any], at: datetime, msg_id: str, children: tuple[int, ...]
) -> None:
    data = pack_record(
        id="0195e1a2-7b3c-7def-8123-456789abcdef",
        channel="child:9",
        author=Author(author_id, name),
        body=body,
        at=at,
        msg_id=msg_id,
        children=children,
    )
    m = unpack_record(seq, data)
    id_, channel, row_seq, row_author, row_name, row_msg_id, at_us, row_body, row_children = record_row(seq, data)
    assert (id_, channel, row_seq, row_author, row_name, row_msg_id) == (
        m.id,
        m.channel,
        m.seq,
        m.author.id,
        m.author.name,
        m.msg_id,
    )
    assert datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=at_us) == m.at
    assert (row_body, row_children) == (m.body, m.children)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\xc1", ValueError),  # not msgpack
        (msgpack.packb({"id": "x"}), KeyError),  # fields missing
        (msgpack.packb({"id": "x", "ch": "family:1", "a": 7, "b": {}, "t": 0, "k": "k", "c": []}), TypeError),
        (msgpack.packb({"id": "x", "ch": "family:1", "a": [1, "A"], "b": ["x"], "t": 0, "k": "k", "c": []}), TypeError),
        (msgpack.packb({"id": "x", "ch": "family:1", "a": [1, "A"], "b": {}, "t": 0, "k": "k", "c": 3}), TypeError),
    ],
)
def test_a_record_that_cannot_be_read_raises(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        record_row(1, data)


async def is_withdrawn(pool: asyncpg.Pool, message_id: str) -> bool:
    return bool(
        await pool.fetchval("SELECT withdrawn_at IS NOT NULL FROM messages WHERE id = $1", uuid.UUID(message_id))
    )


async def test_what_is_stored_is_what_was_published(pool: asyncpg.Pool) -> None:
    staff = await pool.fetchval(
        "INSERT INTO users (email, display_name) VALUES ('staff@example.test', 'Staff') RETURNING id"
    )
    structure = await pool.fetchval("INSERT INTO structures (name) VALUES ('Crèche') RETURNING id")
    child = await pool.fetchval(
        "INSERT INTO children (structure_id, first_name, last_name, enrolled_on) VALUES ($1, 'Léa', 'Martin', $2)"
        " RETURNING id",
        structure,
        AT.date(),
    )
    published = [
        message(1, author=Author(staff, "Sophie Éducatrice 👩‍🍼"), children=(child,)),
        message(2, body={"kind": "announcement", "title": "Fermeture", "text": "Le 1ᵉʳ mai"}),
        message(3, body={"kind": "daily_report", "child": child, "date": "2025-03-14", "note": 'a\tb\n"c" \\'}),
        # No kind: stored as text, as before. A time before 2000 (PostgreSQL's own epoch)
        # and one far ahead, both to the µs.
        message(4, body={"text": "sans kind"}, at=datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        message(5, at=datetime(2199, 7, 1, 0, 0, 0, 1, tzinfo=UTC)),
        # An author who no longer exists (foreign key): kept by name only; a tag on a child
        # who does not exist is dropped.
        message(6, author=Author(staff + 1000, "Parti"), children=(child + 1000,)),
    ]
    store = MessageStore(pool)
    assert await store.insert([row(m) for m in published]) == set()

    back = await store.newest_between("family:1", after=0, upto=10, limit=10)
    assert back == [*published[:5], replace(published[5], author=Author(0, "Parti"), children=())]
    assert [r["kind"] for r in await pool.fetch("SELECT kind FROM messages ORDER BY seq")] == [
        "text",
        "announcement",
        "daily_report",
        "text",
        "text",
        "text",
    ]


async def test_a_replayed_batch_stores_nothing_twice_and_a_taken_sequence_is_refused(pool: asyncpg.Pool) -> None:
    store = MessageStore(pool)
    first = [message(n) for n in range(1, 6)]
    assert await store.insert([row(m) for m in first]) == set()
    # The same batch again (a worker killed before XACK), then with a new message: nothing
    # refused, the new one stored.
    assert await store.insert([row(m) for m in first]) == set()
    sixth = message(6)
    assert await store.insert([row(m) for m in [*first, sixth]]) == set()
    # A sequence that went back: seq 3 is another message's.
    clash, seventh = message(3, msg_id="clash"), message(7)
    assert await store.insert([row(clash), row(seventh), row(first[0])]) == {clash.id}
    rows = await pool.fetch("SELECT id::text, seq FROM messages ORDER BY seq")
    assert [(r["id"], r["seq"]) for r in rows] == [(m.id, m.seq) for m in [*first, sixth, seventh]]


async def test_a_value_postgres_cannot_hold_fails_the_whole_batch(pool: asyncpg.Pool) -> None:
    store = MessageStore(pool)
    with pytest.raises(asyncpg.DataError):
        await store.insert([row(message(1)), row(message(2, body={"kind": "text", "text": "nul \x00"}))])
    assert await pool.fetchval("SELECT count(*) FROM messages") == 0


async def test_a_withdrawal_stored_first_marks_its_message_when_it_comes(pool: asyncpg.Pool) -> None:
    store = MessageStore(pool)
    withdrawn, kept = message(1), message(2)
    await store.withdraw([(withdrawn.id, withdrawn.channel, "author")])
    assert await store.insert([row(withdrawn), row(kept)]) == set()
    assert await is_withdrawn(pool, withdrawn.id)
    assert not await is_withdrawn(pool, kept.id)
