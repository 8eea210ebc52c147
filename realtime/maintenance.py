"""Maintenance mode of a deployment: while it is on, every gateway refuses logins, API calls
and WebSocket handshakes with `503 maintenance` and the operator's message, and moves its
connected clients off (protocol.md §5.4); workers go on draining their queues.

The state is one row in PostgreSQL, so that it outlives a Redis restart and a gateway that
starts meanwhile reads it; switching it announces the change to every gateway at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from realtime.database import Pool
from realtime.errors import BadRequest
from realtime.invalidation import announce
from realtime.keys import Keys

MAX_MESSAGE = 500
# What clients are told to wait before they try again.
RETRY_AFTER_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Maintenance:
    message: str
    since: datetime

    def public(self) -> dict[str, Any]:
        return {"message": self.message, "since": self.since.isoformat()}


def checked_message(message: object) -> str:
    if not isinstance(message, str) or not 1 <= len(message.strip()) <= MAX_MESSAGE:
        raise BadRequest(f"the message must be 1 to {MAX_MESSAGE} characters", code="bad_request")
    return message.strip()


async def current(pool: Pool) -> Maintenance | None:
    row = await pool.fetchrow("SELECT message, since FROM maintenance")
    return None if row is None else Maintenance(row["message"], row["since"])


async def switch_on(pool: Pool, redis: Redis, keys: Keys, message: object) -> Maintenance:
    """Switching it on again changes the message and keeps the start."""
    text = checked_message(message)
    row = await pool.fetchrow(
        "INSERT INTO maintenance (message) VALUES ($1)"
        " ON CONFLICT (singleton) DO UPDATE SET message = excluded.message RETURNING message, since",
        text,
    )
    assert row is not None
    await announce(redis, keys, maintenance=True)
    return Maintenance(row["message"], row["since"])


async def switch_off(pool: Pool, redis: Redis, keys: Keys) -> bool:
    """False when it was off already."""
    was_on = await pool.fetchval("DELETE FROM maintenance RETURNING true")
    await announce(redis, keys, maintenance=True)
    return bool(was_on)
