"""The messages table: the durable record that the persistence worker writes and resume reads."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from realtime.database import Pool
from realtime.messages import Author, Message

INSERT_MESSAGES = """
INSERT INTO messages (id, channel, seq, author_id, author_name, kind, body, client_msg_id, created_at, withdrawn_at)
SELECT m.id, m.channel, m.seq, u.id, m.author_name, m.kind, m.body, m.client_msg_id, m.created_at,
       (SELECT w.at FROM message_withdrawals w WHERE w.message_id = m.id)
FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::jsonb[],
            $8::text[], $9::timestamptz[])
     AS m(id, channel, seq, author_id, author_name, kind, body, client_msg_id, created_at)
LEFT JOIN users u ON u.id = m.author_id
ON CONFLICT DO NOTHING
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

SELECT_ABSENT = """
SELECT x::text AS id FROM unnest($1::uuid[]) AS x WHERE NOT EXISTS (SELECT 1 FROM messages WHERE id = x)
"""

MESSAGE_COLUMNS = """
SELECT id::text, channel, seq, author_id, author_name, body, created_at, client_msg_id,
       withdrawn_at IS NOT NULL AS withdrawn,
       ARRAY(SELECT child_id FROM message_children mc WHERE mc.message_id = messages.id ORDER BY 1) AS children
FROM messages"""

SELECT_RANGE = MESSAGE_COLUMNS + " WHERE channel = $1 AND seq > $2 AND seq <= $3 ORDER BY seq DESC LIMIT $4"
SELECT_ONE = MESSAGE_COLUMNS + " WHERE channel = $1 AND id = $2"


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

    async def insert(self, messages: Sequence[Message]) -> set[str]:
        """Idempotent: a batch replayed after a crash inserts nothing twice.

        Returns the ids that could not be stored because their (channel, seq) belongs to
        another message: the channel's sequence went back (Redis lost recent writes)."""
        if not messages:
            return set()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(LOCK_CHANNELS, [m.channel for m in messages])
            await conn.execute(
                INSERT_MESSAGES,
                [m.id for m in messages],
                [m.channel for m in messages],
                [m.seq for m in messages],
                [m.author.id for m in messages],
                [m.author.name for m in messages],
                [m.body.get("kind", "text") for m in messages],
                [m.body for m in messages],
                [m.msg_id for m in messages],
                [m.at for m in messages],
            )
            tags = [(m.id, child) for m in messages for child in m.children]
            if tags:
                await conn.execute(INSERT_TAGS, [t[0] for t in tags], [t[1] for t in tags])
            rows = await conn.fetch(SELECT_ABSENT, [m.id for m in messages])
        return {r["id"] for r in rows}
