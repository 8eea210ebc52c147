"""The audit log: append-only facts of who did what to whom. Never message contents,
tokens or passwords: the log outlives the data it mentions (erasure keeps the fact)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy


async def record(
    conn: PoolConnectionProxy[asyncpg.Record],
    *,
    actor_id: int | None,
    structure_id: int | None,
    action: str,
    subject_type: str,
    subject_id: int | str,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Written in the caller's transaction, so the fact and the change commit together."""
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
