"""Data exports (portability): the requests, their queue and their lifecycle in PostgreSQL.
What goes in the zip is workers/export_builder.py's business; the format is docs/export.md.

The `exports` table is the queue, like `media` (realtime/media.py): a worker claims the
oldest queued export (FOR UPDATE SKIP LOCKED) under a lease that each progress step
renews, so a worker killed mid-build leaves the job to another once the lease ends. Each
claim counts an attempt, and the attempt number fences the claim: a worker whose lease
was taken over can no longer write progress or completion. A job is tried MAX_ATTEMPTS
times at most, then `failed`.

States: queued → running → ready → expired (the zip deleted after `export_days`), or
failed. A failed attempt goes back to queued until the attempts are spent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from realtime import audit
from realtime.admin import iso
from realtime.database import Pool
from realtime.errors import Conflict
from realtime.ids import canonical_uuid

# Workers LISTEN here; a new request NOTIFYs, so the build starts at once.
NOTIFY_CHANNEL = "procreche_exports"
MAX_ATTEMPTS = 3
SCOPES = ("me", "child", "household", "structure")
PENDING = ("queued", "running")
CONTENT_TYPE = "application/zip"
# How long a download link handed out by `GET /api/exports/{id}` lives.
LINK_SECONDS = 900
LIST_LIMIT = 20

COLUMNS = (
    "id::text AS id, requester_id, structure_id, scope, subject, state, progress, object_key, bytes, attempts,"
    " created_at, ready_at, expires_at"
)


def object_key(export_id: str) -> str:
    """Where an export's zip lives in the media store: built from its id only."""
    return f"exports/{export_id}.zip"


@dataclass(frozen=True, slots=True)
class Export:
    id: str
    requester_id: int | None
    structure_id: int | None
    scope: str
    subject: int | None
    state: str
    progress: int
    object_key: str | None
    bytes: int | None
    attempts: int
    created_at: datetime
    ready_at: datetime | None
    expires_at: datetime | None

    @classmethod
    def of(cls, row: asyncpg.Record) -> Export:
        return cls(**dict(row))

    def lapsed(self, now: datetime) -> bool:
        """Ready, but past its expiry: the sweep has not deleted it yet."""
        return self.state == "ready" and self.expires_at is not None and self.expires_at <= now

    def public(self, *, now: datetime, url: str | None = None) -> dict[str, Any]:
        """The export object of the HTTP API (docs/protocol.md §1.6)."""
        state = "expired" if self.lapsed(now) else self.state
        answer: dict[str, Any] = {
            "id": self.id,
            "scope": self.scope,
            "subject": self.subject,
            "state": state,
            "progress": self.progress,
            "created_at": iso(self.created_at),
        }
        if self.bytes is not None:
            answer["bytes"] = self.bytes
        if self.ready_at is not None:
            answer["ready_at"] = iso(self.ready_at)
        if self.expires_at is not None:
            answer["expires_at"] = iso(self.expires_at)
        if url is not None and state == "ready":
            answer["url"] = url
        return answer

    def audit_details(self) -> dict[str, Any]:
        # Scope and subject only: never anything of the content.
        return {"scope": self.scope, "subject": self.subject}


class Exports:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def request(
        self, *, requester_id: int, structure_id: int | None, scope: str, subject: int | None
    ) -> tuple[Export, bool]:
        """Queue an export, or find the same requester's export of that subject still in
        the making. Returns it and whether it is new."""
        async with self.pool.acquire() as conn, conn.transaction():
            # Two requests at once: the unique index of pending exports lets one insert;
            # the other waits for its commit, then finds it. Should that one finish in
            # between, the next round inserts after all.
            for _ in range(3):
                row = await conn.fetchrow(
                    "INSERT INTO exports (id, requester_id, structure_id, scope, subject) VALUES ($1, $2, $3, $4, $5)"
                    f" ON CONFLICT DO NOTHING RETURNING {COLUMNS}",
                    str(uuid.uuid4()),
                    requester_id,
                    structure_id,
                    scope,
                    subject,
                )
                if row is not None:
                    break
                pending = await conn.fetchrow(
                    f"SELECT {COLUMNS} FROM exports WHERE requester_id = $1 AND scope = $2"
                    " AND subject IS NOT DISTINCT FROM $3 AND state IN ('queued', 'running')",
                    requester_id,
                    scope,
                    subject,
                )
                if pending is not None:
                    return Export.of(pending), False
            else:
                raise Conflict("this export is being requested concurrently; retry", code="conflict")
            assert row is not None
            export = Export.of(row)
            await audit.record(
                conn,
                actor_id=requester_id,
                structure_id=structure_id,
                action="export.request",
                subject_type="export",
                subject_id=export.id,
                details=export.audit_details(),
            )
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, export.id)
        return export, True

    async def get(self, export_id: str) -> Export | None:
        canonical = canonical_uuid(export_id)
        if canonical is None:
            return None
        row = await self.pool.fetchrow(f"SELECT {COLUMNS} FROM exports WHERE id = $1", canonical)
        return None if row is None else Export.of(row)

    async def of_requester(self, requester_id: int, limit: int = LIST_LIMIT) -> list[Export]:
        rows = await self.pool.fetch(
            f"SELECT {COLUMNS} FROM exports WHERE requester_id = $1 ORDER BY created_at DESC, id LIMIT $2",
            requester_id,
            limit,
        )
        return [Export.of(r) for r in rows]

    async def downloaded(self, export: Export) -> None:
        """A download link was handed out to the requester: audited."""
        await audit.record(
            self.pool,
            actor_id=export.requester_id,
            structure_id=export.structure_id,
            action="export.download",
            subject_type="export",
            subject_id=export.id,
            details=export.audit_details(),
        )

    # -- the queue ------------------------------------------------------------------------

    async def claim(self, lease: timedelta) -> Export | None:
        """The oldest export waiting to be built, leased to the caller (state `running`)."""
        row = await self.pool.fetchrow(
            "UPDATE exports SET state = 'running', progress = 0, attempts = attempts + 1,"
            " claimed_until = now() + $1"
            " WHERE id = (SELECT id FROM exports WHERE state IN ('queued', 'running')"
            " AND (claimed_until IS NULL OR claimed_until < now())"
            " ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)"
            f" RETURNING {COLUMNS}",
            lease,
        )
        return None if row is None else Export.of(row)

    async def progress(self, export: Export, progress: int, lease: timedelta) -> bool:
        """Record progress and renew the lease; False if the claim is no longer ours."""
        done = await self.pool.fetchval(
            "UPDATE exports SET progress = $3, claimed_until = now() + $4"
            " WHERE id = $1 AND attempts = $2 AND state = 'running' RETURNING true",
            export.id,
            export.attempts,
            progress,
            lease,
        )
        return bool(done)

    async def complete(self, export: Export, *, key: str, size: int, days: int) -> Export | None:
        """Mark built, its zip at `key`; None if the claim is no longer ours."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE exports SET state = 'ready', progress = 100, object_key = $3, bytes = $4,"
                " claimed_until = NULL, ready_at = now(), expires_at = now() + $5"
                f" WHERE id = $1 AND attempts = $2 AND state = 'running' RETURNING {COLUMNS}",
                export.id,
                export.attempts,
                key,
                size,
                timedelta(days=days),
            )
            if row is None:
                return None
            ready = Export.of(row)
            await audit.record(
                conn,
                actor_id=None,
                structure_id=ready.structure_id,
                action="export.ready",
                subject_type="export",
                subject_id=ready.id,
                details=ready.audit_details() | {"bytes": size},
            )
        return ready

    async def retry_later(self, export: Export, delay: timedelta) -> bool:
        """Back in the queue, to be claimed again after `delay`; False if not ours any more."""
        done = await self.pool.fetchval(
            "UPDATE exports SET state = 'queued', progress = 0, claimed_until = now() + $3"
            " WHERE id = $1 AND attempts = $2 AND state = 'running' RETURNING true",
            export.id,
            export.attempts,
            delay,
        )
        return bool(done)

    async def fail(self, export: Export) -> bool:
        done = await self.pool.fetchval(
            "UPDATE exports SET state = 'failed', claimed_until = NULL"
            " WHERE id = $1 AND attempts = $2 AND state IN ('queued', 'running') RETURNING true",
            export.id,
            export.attempts,
        )
        return bool(done)

    async def lapsed(self, limit: int = 100) -> list[Export]:
        """Ready exports past their expiry, oldest first."""
        rows = await self.pool.fetch(
            f"SELECT {COLUMNS} FROM exports WHERE state = 'ready' AND expires_at <= now() ORDER BY expires_at LIMIT $1",
            limit,
        )
        return [Export.of(r) for r in rows]

    async def expired(self, export: Export) -> bool:
        """Mark expired, once its zip is deleted."""
        done = await self.pool.fetchval(
            "UPDATE exports SET state = 'expired' WHERE id = $1 AND state = 'ready' RETURNING true", export.id
        )
        return bool(done)
