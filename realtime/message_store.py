"""The messages table: the durable record that the persistence worker writes and resume reads."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg
import msgpack

from realtime.database import Pool
from realtime.messages import Author, Message

MessageRow: TypeAlias = tuple[str, str, int, int, str, str, int, dict[str, Any], tuple[int, ...]]
"""A message as the persistence worker inserts it: (id, channel, seq, author id, author name,
client message id, time in µs since the Unix epoch, body, child tags). A plain tuple, built
straight from the ingest record (`record_row`): a Message, an Author and a datetime per row
were a third of the worker's CPU (bench/capacity.py)."""

# One statement per batch. The columns travel as arrays, which asyncpg encodes in C, and
# what was left of per-row Python work goes to PostgreSQL: the bodies travel as one JSON
# array (one json.dumps per batch, not one per row), which jsonb_array_elements expands
# beside the arrays (ROWS FROM zips them in order); the time as the record's µs since the
# epoch (exact: a bigint times an interval of 1 µs is exact within 2^53 µs of 1970, i.e.
# from 1685 to 2255); the kind is read from the body. RETURNING counts the rows inserted,
# so that the ids absent are looked for only when some row conflicted (see `insert`). An
# erased message (a tombstone in erased_messages) is never inserted, and never absent.
INSERT_MESSAGES = """
WITH inserted AS (
    INSERT INTO messages (id, channel, seq, author_id, author_name, kind, body, client_msg_id, created_at,
                          withdrawn_at)
    SELECT m.id, m.channel, m.seq, u.id, m.author_name, coalesce(m.body->>'kind', 'text'), m.body, m.client_msg_id,
           timestamptz 'epoch' + m.at_us * interval '1 microsecond',
           (SELECT w.at FROM message_withdrawals w WHERE w.message_id = m.id)
    FROM ROWS FROM (
             unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::bigint[]),
             jsonb_array_elements($8::text::jsonb)
         ) AS m(id, channel, seq, author_id, author_name, client_msg_id, at_us, body)
    LEFT JOIN users u ON u.id = m.author_id
    WHERE NOT EXISTS (SELECT 1 FROM erased_messages e WHERE e.id = m.id)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM inserted
"""

INSERT_TAGS = """
INSERT INTO message_children (message_id, child_id)
SELECT t.message_id, t.child_id FROM unnest($1::uuid[], $2::bigint[]) AS t(message_id, child_id)
WHERE EXISTS (SELECT 1 FROM messages m WHERE m.id = t.message_id)
  AND EXISTS (SELECT 1 FROM children c WHERE c.id = t.child_id)
ON CONFLICT DO NOTHING
"""

INSERT_WITHDRAWALS = """
WITH recorded AS (
    INSERT INTO message_withdrawals (message_id, channel, reason)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[])
    ON CONFLICT DO NOTHING RETURNING message_id, at
)
UPDATE messages m SET withdrawn_at = r.at FROM recorded r WHERE m.id = r.message_id AND m.withdrawn_at IS NULL
"""

# A message and its withdrawal may be persisted at the same moment by two workers (one
# reclaiming): each statement would miss the other's uncommitted row. Locking the channels
# (in a fixed order, so two batches never deadlock) makes the later one see the earlier.
LOCK_CHANNELS = (
    "SELECT pg_advisory_xact_lock(hashtext(c)) FROM (SELECT DISTINCT unnest($1::text[]) AS c ORDER BY 1) AS cs"
)

# The messages that are a child's data ($1, the child's id), for a table aliased `m`: their
# feed, the messages tagging them, and their daily reports wherever they were posted.
ABOUT_CHILD = (
    "(m.channel = 'child:' || $1::bigint"
    " OR m.id IN (SELECT message_id FROM message_children WHERE child_id = $1)"
    " OR m.body @> jsonb_build_object('kind', 'daily_report', 'child', $1::bigint))"
)

SELECT_ABSENT = """
SELECT x::text AS id FROM unnest($1::uuid[]) AS x
WHERE NOT EXISTS (SELECT 1 FROM messages WHERE id = x) AND NOT EXISTS (SELECT 1 FROM erased_messages WHERE id = x)
"""

MESSAGE_COLUMNS = """
SELECT id::text, channel, seq, author_id, author_name, body, created_at, client_msg_id,
       withdrawn_at IS NOT NULL AS withdrawn,
       ARRAY(SELECT child_id FROM message_children mc WHERE mc.message_id = messages.id ORDER BY 1) AS children
FROM messages"""

SELECT_RANGE = MESSAGE_COLUMNS + " WHERE channel = $1 AND seq > $2 AND seq <= $3 ORDER BY seq DESC LIMIT $4"
SELECT_ONE = MESSAGE_COLUMNS + " WHERE channel = $1 AND id = $2"


def record_row(seq: int, record: bytes) -> MessageRow:
    """The row of an ingest entry: its sequence number and its record (realtime.messages.pack_record).

    Reads what `unpack_record` reads, without the objects it builds, and raises what it
    raises for a record it cannot read (KeyError, ValueError, TypeError), as well as
    TypeError for a body that is not a map: the worker dead-letters such an entry at once."""
    r = msgpack.unpackb(record)
    author_id, author_name = r["a"]
    body = r["b"]
    if not isinstance(body, dict):
        raise TypeError(f"a message body is a map, not {type(body).__name__}")
    return (r["id"], r["ch"], seq, author_id, author_name, r["k"], r["t"], body, tuple(r["c"]))


def _message(r: asyncpg.Record) -> Message:
    return Message(
        id=r["id"],
        channel=r["channel"],
        seq=r["seq"],
        author=Author(r["author_id"] or 0, r["author_name"]),
        body=r["body"],
        at=r["created_at"],
        msg_id=r["client_msg_id"],
        children=tuple(r["children"]),
        withdrawn=r["withdrawn"],
    )


class MessageStore:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def max_seq(self, channel: str) -> int:
        value = await self.pool.fetchval("SELECT max(seq) FROM messages WHERE channel = $1", channel)
        return int(value or 0)

    async def by_id(self, channel: str, message_id: str) -> Message | None:
        try:
            key = uuid.UUID(message_id)
        except ValueError:
            return None
        rows = await self.pool.fetch(SELECT_ONE, channel, key)
        return _message(rows[0]) if rows else None

    async def newest_between(self, channel: str, *, after: int, upto: int, limit: int) -> list[Message]:
        """The `limit` newest messages with after < seq <= upto, oldest first."""
        rows = await self.pool.fetch(SELECT_RANGE, channel, after, upto, limit)
        return [_message(r) for r in reversed(rows)]

    async def withdraw(self, withdrawals: Sequence[tuple[str, str, str]]) -> None:
        """Record (message id, channel, reason) withdrawals; idempotent."""
        if not withdrawals:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(LOCK_CHANNELS, [w[1] for w in withdrawals])
            await conn.execute(
                INSERT_WITHDRAWALS,
                [w[0] for w in withdrawals],
                [w[1] for w in withdrawals],
                [w[2] for w in withdrawals],
            )

    async def insert(self, rows: Sequence[MessageRow]) -> set[str]:
        """Idempotent: a batch replayed after a crash inserts nothing twice.

        Returns the ids that could not be stored because their (channel, seq) belongs to
        another message: the channel's sequence went back (Redis lost recent writes)."""
        if not rows:
            return set()
        ids, channels, seqs, author_ids, author_names, msg_ids, times, bodies, children = zip(*rows, strict=True)
        async with self.pool.acquire() as conn, conn.transaction():
            # Each channel once: the lock statement sorts and locks what it is given.
            await conn.execute(LOCK_CHANNELS, list(set(channels)))
            inserted = await conn.fetchval(
                INSERT_MESSAGES, ids, channels, seqs, author_ids, author_names, msg_ids, times, json.dumps(bodies)
            )
            tags = [(message_id, child) for message_id, tagged in zip(ids, children, strict=True) for child in tagged]
            if tags:
                await conn.execute(INSERT_TAGS, [t[0] for t in tags], [t[1] for t in tags])
            if inserted == len(rows):
                return set()
            # Some rows conflicted: already stored (a batch replayed after a crash) or
            # refused (another message holds their (channel, seq)). Only the latter are absent.
            absent = await conn.fetch(SELECT_ABSENT, ids)
        return {r["id"] for r in absent}
