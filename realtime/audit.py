"""The audit log: append-only facts of who did what to whom. Never message contents,
tokens or passwords: the log outlives the data it mentions (erasure keeps the fact)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from realtime.database import Pool


async def record(
    conn: PoolConnectionProxy[asyncpg.Record] | Pool,
    *,
    actor_id: int | None,
    structure_id: int | None,
    action: str,
    subject_type: str,
    subject_id: int | str,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Written in the caller's transaction, so the fact and the change commit together; a
    fact that changes nothing else (a login, a view, a download) is written on the pool."""
    await conn.execute(
        "INSERT INTO audit_log (actor_id, structure_id, action, subject_type, subject_id, details)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        actor_id,
        structure_id,
        action,
        subject_type,
        str(subject_id),
        dict(details or {}),
    )


async def record_own(
    conn: PoolConnectionProxy[asyncpg.Record], *, user_id: int, action: str, details: Mapping[str, Any] | None = None
) -> None:
    """A user's act on their own account, in the log of each structure they belong to (whose
    admins answer for their data), or without a structure when they belong to none."""
    rows = await conn.fetch("SELECT DISTINCT structure_id FROM memberships WHERE user_id = $1 ORDER BY 1", user_id)
    for structure_id in [r["structure_id"] for r in rows] or [None]:
        await record(
            conn,
            actor_id=user_id,
            structure_id=structure_id,
            action=action,
            subject_type="user",
            subject_id=user_id,
            details=details,
        )
