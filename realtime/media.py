"""The media library in PostgreSQL: uploads registered under their structure's quota, the
processing queue, and publication (a media is reserved by one publish, then bound to the
message it produced).

The `media` table is the processing queue itself: a worker claims the oldest row in state
`processing` (FOR UPDATE SKIP LOCKED) under a lease. A crashed worker's lease runs out and
another worker takes the job; a job is tried MAX_ATTEMPTS times at most. PostgreSQL
rather than a Redis stream because a job must outlive a Redis restart without persistence,
and media arrive at human pace (NOTIFY wakes the workers at once).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from realtime import audit
from realtime.database import Pool
from realtime.errors import TooLarge
from realtime.ids import canonical_uuid
from realtime.media_types import MediaType
from realtime.permissions import Decision, MediaItem, refusal

# Workers LISTEN here; a new upload NOTIFYs, so processing starts at once.
NOTIFY_CHANNEL = "procreche_media"
MAX_ATTEMPTS = 3
RENDITIONS = ("original", "screen", "thumb")

COLUMNS = (
    "id::text AS id, structure_id, uploader_id, state, kind, content_type, bytes, width, height, duration_ms,"
    " reject_code, renditions, incoming_key, channel, msg_key, message_id::text AS message_id, children, attempts"
)

# Bytes a structure stores: rejected uploads are deleted, so they don't count.
USED_SQL = "SELECT coalesce(sum(bytes), 0) FROM media WHERE structure_id = $1 AND state <> 'rejected'"


def object_key(structure_id: int, media_id: str, name: str) -> str:
    """Where a media's object lives in the store: built from ids only, never from a name
    the uploader chose."""
    return f"s{structure_id}/{media_id}/{name}"


@dataclass(frozen=True, slots=True)
class Media:
    id: str
    structure_id: int
    uploader_id: int | None
    state: str
    kind: str | None
    content_type: str | None
    bytes: int
    width: int | None
    height: int | None
    duration_ms: int | None
    reject_code: str | None
    renditions: dict[str, dict[str, Any]]
    incoming_key: str | None
    channel: str | None
    msg_key: str | None
    message_id: str | None
    children: tuple[int, ...]
    attempts: int

    @classmethod
    def of(cls, row: asyncpg.Record) -> Media:
        return cls(**{**dict(row), "children": tuple(row["children"])})

    def status(self) -> dict[str, Any]:
        """What `GET /api/media/<id>/status` answers."""
        status: dict[str, Any] = {"id": self.id, "state": self.state}
        if self.state == "rejected":
            status["code"] = self.reject_code
        if self.state == "ready":
            status |= self.description()
        return status

    def description(self) -> dict[str, Any]:
        """How a message shows the media: enough for a client to lay it out before loading it."""
        described: dict[str, Any] = {"id": self.id, "type": self.kind, "width": self.width, "height": self.height}
        if self.duration_ms is not None:
            described["duration_ms"] = self.duration_ms
        return described

    def item(self, channel: str, msg_key: str) -> MediaItem:
        # Reserved by a publish that produced a message elsewhere: taken. A reservation whose
        # publish never produced its message may be taken over by the next publish.
        taken = self.message_id is not None and (self.channel, self.msg_key) != (channel, msg_key)
        return MediaItem(self.id, self.structure_id, self.uploader_id, self.state, taken)


class MediaLibrary:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def get(self, media_id: str) -> Media | None:
        canonical = canonical_uuid(media_id)
        if canonical is None:
            return None
        row = await self.pool.fetchrow(f"SELECT {COLUMNS} FROM media WHERE id = $1", canonical)
        return None if row is None else Media.of(row)

    async def by_idempotency_key(self, uploader_id: int, key: str) -> Media | None:
        row = await self.pool.fetchrow(
            f"SELECT {COLUMNS} FROM media WHERE uploader_id = $1 AND idempotency_key = $2", uploader_id, key
        )
        return None if row is None else Media.of(row)

    async def used(self, structure_id: int) -> int:
        used: int = await self.pool.fetchval(USED_SQL, structure_id)
        return used

    async def register(
        self,
        *,
        media_id: str,
        structure_id: int,
        uploader_id: int,
        idempotency_key: str | None,
        media_type: MediaType,
        size: int,
        incoming_key: str,
        quota: int,
    ) -> tuple[Media, bool]:
        """Record an upload whose file is in the store, and queue it. Returns the media and
        whether it is new: with the idempotency key of an earlier upload, that one."""
        async with self.pool.acquire() as conn, conn.transaction():
            # One upload at a time per structure passes the quota check.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('media-quota'), $1::int)", structure_id)
            used = await conn.fetchval(USED_SQL, structure_id)
            if used + size > quota:
                raise TooLarge(
                    f"the structure's media storage is full ({used} of {quota} bytes used)",
                    code="media_quota_exceeded",
                )
            row = await conn.fetchrow(
                "INSERT INTO media (id, structure_id, uploader_id, state, kind, content_type, bytes,"
                " idempotency_key, incoming_key) VALUES ($1, $2, $3, 'processing', $4, $5, $6, $7, $8)"
                f" ON CONFLICT (uploader_id, idempotency_key) DO NOTHING RETURNING {COLUMNS}",
                media_id,
                structure_id,
                uploader_id,
                media_type.kind,
                media_type.value,
                size,
                idempotency_key,
                incoming_key,
            )
            if row is None:
                existing = await conn.fetchrow(
                    f"SELECT {COLUMNS} FROM media WHERE uploader_id = $1 AND idempotency_key = $2",
                    uploader_id,
                    idempotency_key,
                )
                assert existing is not None  # the conflict was on this very row
                return Media.of(existing), False
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, media_id)
        return Media.of(row), True

    async def claim(self, lease: timedelta) -> Media | None:
        """The oldest media waiting for processing, leased to the caller."""
        row = await self.pool.fetchrow(
            "UPDATE media SET attempts = attempts + 1, claimed_until = now() + $1"
            " WHERE id = (SELECT id FROM media WHERE state = 'processing'"
            " AND (claimed_until IS NULL OR claimed_until < now())"
            " ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)"
            f" RETURNING {COLUMNS}",
            lease,
        )
        return None if row is None else Media.of(row)

    async def complete(
        self, media_id: str, *, width: int, height: int, duration_ms: int | None, renditions: dict[str, Any]
    ) -> bool:
        """Mark processed; False if it was not processing any more (another worker finished it)."""
        size = sum(r["bytes"] for r in renditions.values())
        done = await self.pool.fetchval(
            "UPDATE media SET state = 'ready', width = $2, height = $3, duration_ms = $4, renditions = $5,"
            " bytes = $6, incoming_key = NULL, claimed_until = NULL, ready_at = now()"
            " WHERE id = $1 AND state = 'processing' RETURNING true",
            media_id,
            width,
            height,
            duration_ms,
            renditions,
            size,
        )
        return bool(done)

    async def reject(self, media_id: str, code: str) -> bool:
        done = await self.pool.fetchval(
            "UPDATE media SET state = 'rejected', reject_code = $2, bytes = 0, incoming_key = NULL,"
            " claimed_until = NULL WHERE id = $1 AND state = 'processing' RETURNING true",
            media_id,
            code,
        )
        return bool(done)

    async def retry_later(self, media_id: str, delay: timedelta, *, give_back: bool) -> None:
        """Try the job again after `delay`. `give_back`: the failure was ours (storage
        down), not the file's, so the attempt does not count."""
        await self.pool.execute(
            "UPDATE media SET attempts = greatest(attempts - $3, 0), claimed_until = now() + $2"
            " WHERE id = $1 AND state = 'processing'",
            media_id,
            delay,
            1 if give_back else 0,
        )

    async def reserve(
        self,
        ids: Collection[str],
        *,
        channel: str,
        msg_key: str,
        actor_id: int,
        children: Collection[int],
        confirmed: bool,
        decide: Callable[[list[MediaItem | None]], Decision],
    ) -> list[Media]:
        """Reserve media for the publish (channel, msg_key), atomically: `decide` judges them
        with their rows locked. A retry of the same publish finds its own reservation. A
        publisher's confirmation that no child is identifiable is audited with it."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(f"SELECT {COLUMNS} FROM media WHERE id = ANY($1::uuid[]) FOR UPDATE", list(ids))
            found = {row["id"]: Media.of(row) for row in rows}
            decision = decide([found[i].item(channel, msg_key) if i in found else None for i in ids])
            if not decision.allowed:
                raise refusal(decision)
            await conn.execute(
                "UPDATE media SET channel = $2, msg_key = $3, children = $4, message_id = NULL"
                " WHERE id = ANY($1::uuid[]) AND (channel, msg_key) IS DISTINCT FROM ($2, $3)",
                list(ids),
                channel,
                msg_key,
                list(children),
            )
            media = [found[i] for i in ids]
            if confirmed:
                await audit.record(
                    conn,
                    actor_id=actor_id,
                    structure_id=media[0].structure_id,
                    action="media.no_child_identifiable",
                    subject_type="media",
                    subject_id=",".join(ids),
                    details={"channel": channel},
                )
        return media

    async def bind(self, ids: Collection[str], *, channel: str, msg_key: str, message_id: str) -> bool:
        """Bind reserved media to the message their publish produced. False if another
        publish took a media over meanwhile."""
        bound = await self.pool.fetchval(
            "WITH b AS (UPDATE media SET message_id = $4 WHERE id = ANY($1::uuid[]) AND channel = $2"
            " AND msg_key = $3 AND (message_id IS NULL OR message_id = $4) RETURNING 1) SELECT count(*) FROM b",
            list(ids),
            channel,
            msg_key,
            message_id,
        )
        return bool(bound == len(ids))

    async def bind_published(self, media: Media, message_id: str | None) -> Media:
        """A reservation whose publish succeeded, not bound yet: its gateway is binding it (a
        viewer the message reached live can ask first) or died before it. Bind it now to its
        message: `message_id`, as Redis's record of the publish names it, else the one
        PostgreSQL holds for the publish."""
        if media.message_id is not None or media.channel is None:
            return media
        if message_id is None:
            message_id = await self.pool.fetchval(
                "SELECT id::text FROM messages WHERE channel = $1 AND author_id = $2 AND client_msg_id = $3",
                media.channel,
                media.uploader_id,
                media.msg_key,
            )
        if message_id is None:
            return media
        await self.bind([media.id], channel=media.channel, msg_key=media.msg_key or "", message_id=message_id)
        return await self.get(media.id) or media

    async def withdrawn_in_store(self, message_id: str) -> bool:
        """A withdrawal PostgreSQL holds (Redis keeps the recent ones: Bus.is_withdrawn)."""
        found = await self.pool.fetchval("SELECT true FROM message_withdrawals WHERE message_id = $1", message_id)
        return bool(found)
