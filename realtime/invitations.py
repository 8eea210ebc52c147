"""Invitations: the link by which the owner of an account an admin created sets its first
password. An admin never chooses nor sees a password.

Only accounts without a password can be invited: an invitation to an account that has one
would let the admin of one structure take over a user who is also staff of another.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncpg.pool import PoolConnectionProxy

from realtime import audit
from realtime.database import Pool
from realtime.errors import Conflict, NotFound
from realtime.tokens import token_digest

VALID_FOR = timedelta(days=7)
LINK_PREFIX = "/#/invite/"

PENDING_SQL = """
SELECT i.user_id, i.structure_id, u.email, u.display_name, s.name AS structure
FROM invitations i JOIN users u ON u.id = i.user_id JOIN structures s ON s.id = i.structure_id
WHERE i.token_hash = $1 AND i.used_at IS NULL AND i.expires_at > now()
  AND u.password_hash IS NULL AND u.disabled_at IS NULL
"""


def invalid() -> NotFound:
    return NotFound("this invitation is invalid, used or expired: ask for a new one", code="invitation_invalid")


async def create(conn: PoolConnectionProxy[Any], *, actor_id: int, structure_id: int, user_id: int) -> dict[str, Any]:
    """A new link for a member of the structure (in the caller's transaction); the links sent
    before stop working."""
    member = await conn.fetchrow(
        "SELECT u.password_hash IS NOT NULL AS active FROM users u"
        " WHERE u.id = $1 AND EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = u.id AND m.structure_id = $2)",
        user_id,
        structure_id,
    )
    if member is None:
        raise NotFound("no such user in this structure")
    if member["active"]:
        raise Conflict("this account has a password already: its owner logs in", code="already_active")
    await conn.execute("DELETE FROM invitations WHERE user_id = $1 AND used_at IS NULL", user_id)
    token = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + VALID_FOR
    await conn.execute(
        "INSERT INTO invitations (token_hash, user_id, structure_id, created_by, expires_at)"
        " VALUES ($1, $2, $3, $4, $5)",
        token_digest(token),
        user_id,
        structure_id,
        actor_id,
        expires,
    )
    await audit.record(
        conn,
        actor_id=actor_id,
        structure_id=structure_id,
        action="invitation.create",
        subject_type="user",
        subject_id=user_id,
    )
    return {"user_id": user_id, "link": f"{LINK_PREFIX}{token}", "expires_at": expires.isoformat()}


async def pending(pool: Pool, token: str) -> dict[str, Any]:
    """Whom a valid invitation is for, so that its page can greet them."""
    row = await pool.fetchrow(PENDING_SQL, token_digest(token)) if 0 < len(token) <= 256 else None
    if row is None:
        raise invalid()
    return {"email": row["email"], "name": row["display_name"], "structure": row["structure"]}


async def redeem(conn: PoolConnectionProxy[Any], token: str, password_hash: str) -> int:
    """Set the account's first password and use up the invitation (in the caller's
    transaction); the user's id."""
    digest = token_digest(token)
    row = await conn.fetchrow(PENDING_SQL + " FOR UPDATE OF i", digest)
    if row is None:
        raise invalid()
    await conn.execute(
        "UPDATE users SET password_hash = $2, must_reset_password = false WHERE id = $1", row["user_id"], password_hash
    )
    await conn.execute("UPDATE invitations SET used_at = now() WHERE token_hash = $1", digest)
    await audit.record(
        conn,
        actor_id=row["user_id"],
        structure_id=row["structure_id"],
        action="invitation.accept",
        subject_type="user",
        subject_id=row["user_id"],
    )
    user_id: int = row["user_id"]
    return user_id
