"""Accounts: login with throttling, opaque session tokens, terms of use, password change,
and the owner's rectification of their profile."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from redis.asyncio import Redis

from realtime import audit, invitations
from realtime import keys as K
from realtime.database import Pool
from realtime.errors import BadRequest, Conflict, Forbidden, NotFound, Throttled, Unauthenticated, terms_not_accepted
from realtime.invalidation import announce
from realtime.keys import Keys
from realtime.passwords import Passwords, check_rules
from realtime.settings import Settings
from realtime.tokens import token_digest

INVALID_CREDENTIALS = "wrong email or password"


def normalise_email(email: object) -> str:
    if not isinstance(email, str) or not 3 <= len(email) <= 254 or "@" not in email:
        raise BadRequest("a valid email is required", code="bad_request")
    if not email.strip().isprintable():
        # A NUL (which PostgreSQL text cannot hold: a 500), another control or format
        # character, or a lone surrogate.
        raise BadRequest("a valid email is required", code="bad_request")
    return email.strip().lower()


@dataclass(frozen=True, slots=True)
class SessionUser:
    """The user behind a valid token."""

    user_id: int
    email: str
    name: str
    terms_accepted: bool
    token_hash: bytes

    def public(self) -> dict[str, Any]:
        return {"id": self.user_id, "email": self.email, "name": self.name}

    def require_terms(self) -> SessionUser:
        if not self.terms_accepted:
            raise terms_not_accepted()
        return self


SESSION_SQL = """
SELECT u.id, u.email, u.display_name,
       EXISTS (SELECT 1 FROM terms_acceptances a
               WHERE a.user_id = u.id AND a.version = (SELECT max(version) FROM terms_versions))
         AS terms_accepted
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now() AND u.disabled_at IS NULL
"""


class Accounts:
    def __init__(self, pool: Pool, redis: Redis, keys: Keys, settings: Settings, passwords: Passwords) -> None:
        self.pool = pool
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.passwords = passwords
        self._count_failure = redis.register_script(K.COUNT_FAILURE)

    async def login(self, email: object, password: object) -> tuple[str, SessionUser]:
        address = normalise_email(email)
        if not isinstance(password, str) or not password or len(password) > 1024:
            raise BadRequest("password is required", code="bad_request")
        throttle_key = await self._attempt(address)
        row = await self.pool.fetchrow("SELECT id, password_hash, disabled_at FROM users WHERE email = $1", address)
        valid = await self.passwords.verify(row["password_hash"] if row else None, password)
        if not valid or row is None or row["password_hash"] is None:
            raise Unauthenticated(INVALID_CREDENTIALS, code="invalid_credentials")
        if row["disabled_at"] is not None:
            raise Unauthenticated("this account is disabled", code="account_disabled")
        await self.redis.delete(throttle_key)
        opened = await self._open_session(row["id"])
        await audit.record(
            self.pool, actor_id=row["id"], structure_id=None, action="login", subject_type="user", subject_id=row["id"]
        )
        return opened

    async def _open_session(self, user_id: int) -> tuple[str, SessionUser]:
        token = secrets.token_urlsafe(32)
        expires = datetime.now().astimezone() + timedelta(hours=self.settings.session_ttl_hours)
        await self.pool.execute(
            "INSERT INTO sessions (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
            token_digest(token),
            user_id,
            expires,
        )
        user = await self.session(token)
        assert user is not None
        return token, user

    async def accept_invitation(self, token: object, password: object) -> tuple[str, SessionUser]:
        """The invited sets their first password (the usual rules) and is logged in."""
        if not isinstance(token, str):
            raise invitations.invalid()
        details = await invitations.pending(self.pool, token)
        new_password = check_rules(password, email=details["email"])
        hashed = await self.passwords.hash(new_password)
        async with self.pool.acquire() as conn, conn.transaction():
            user_id = await invitations.redeem(conn, token, hashed)
        return await self._open_session(user_id)

    async def _attempt(self, address: str) -> str:
        """Count one password attempt on the account; returns the counter to clear on success.
        Counted before verifying, unknown accounts alike: parallel guesses cannot slip past
        the limit, and the answer never tells whether an account exists."""
        key = self.keys.login_failures(hashlib.sha256(address.encode()).hexdigest())
        attempts = int(await self._count_failure(keys=[key], args=[self.settings.login_window_seconds]))
        if attempts > self.settings.login_max_attempts:
            raise Throttled("too many failed attempts for this account; try again later")
        return key

    async def session(self, token: str) -> SessionUser | None:
        digest = token_digest(token)
        row = await self.pool.fetchrow(SESSION_SQL, digest)
        if row is None:
            return None
        return SessionUser(row["id"], row["email"], row["display_name"], row["terms_accepted"], digest)

    async def authenticate(self, token: str) -> SessionUser:
        user = await self.session(token) if 0 < len(token) <= 256 else None
        if user is None:
            raise Unauthenticated("invalid or expired token", code="invalid_token")
        return user

    async def logout(self, user: SessionUser) -> None:
        await self.pool.execute(
            "UPDATE sessions SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL",
            user.token_hash,
        )
        # Its open WebSockets, on every gateway, close too.
        await announce(self.redis, self.keys, sessions=[user.token_hash])

    async def current_terms(self) -> dict[str, Any]:
        row = await self.pool.fetchrow("SELECT version, text FROM terms_versions ORDER BY version DESC LIMIT 1")
        if row is None:
            raise NotFound("no terms of use are published")
        return {"version": row["version"], "text": row["text"]}

    async def accept_terms(self, user: SessionUser, version: object) -> None:
        current = await self.current_terms()
        if version != current["version"] or isinstance(version, bool):
            raise BadRequest(f"the current terms are version {current['version']}", code="terms_version_mismatch")
        await self.pool.execute(
            "INSERT INTO terms_acceptances (user_id, version) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            user.user_id,
            current["version"],
        )

    async def _prove(self, user: SessionUser, password: object) -> None:
        """The owner proves a sensitive change with their current password."""
        if not isinstance(password, str) or not password or len(password) > 1024:
            raise BadRequest("the current password is required", code="bad_request")
        # A stolen session must not become a way around the login throttle.
        throttle_key = await self._attempt(user.email)
        hashed = await self.pool.fetchval("SELECT password_hash FROM users WHERE id = $1", user.user_id)
        if not await self.passwords.verify(hashed, password):
            # 403, not 401: the session is fine, the proof is wrong.
            raise Forbidden("the current password is wrong", code="invalid_credentials")
        await self.redis.delete(throttle_key)

    async def change_password(self, user: SessionUser, old: object, new: object) -> None:
        """Only the owner changes a password, and proves it with the old one. Every other
        session of the account is revoked; the one that asked stays open."""
        new_password = check_rules(new, email=user.email)
        if new_password == old:
            raise BadRequest("the new password must differ from the current one", code="weak_password")
        await self._prove(user, old)
        new_hash = await self.passwords.hash(new_password)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE users SET password_hash = $2, must_reset_password = false WHERE id = $1",
                user.user_id,
                new_hash,
            )
            revoked = await conn.fetch(
                "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND token_hash <> $2 AND revoked_at IS NULL"
                " RETURNING token_hash",
                user.user_id,
                user.token_hash,
            )
            await audit.record(
                conn,
                actor_id=user.user_id,
                structure_id=None,
                action="password.change",
                subject_type="user",
                subject_id=user.user_id,
            )
        await announce(self.redis, self.keys, sessions=[r["token_hash"] for r in revoked])

    async def update_profile(self, user: SessionUser, changes: Mapping[str, str], password: object) -> SessionUser:
        """Rectification by the owner: `changes` holds a new `name` and/or `email`. A new email
        is the login, so it takes the current password, throttled like a login; sessions stay
        open. Each structure of the account audits the change (field names, not values), so
        that its admins see it; gateways reload the name shown on new messages."""
        fields = sorted(f for f in changes if changes[f] != {"name": user.name, "email": user.email}[f])
        if not fields:
            return user
        if "email" in fields:
            await self._prove(user, password)
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                await conn.execute(
                    "UPDATE users SET display_name = $2, email = $3 WHERE id = $1",
                    user.user_id,
                    changes.get("name", user.name),
                    changes.get("email", user.email),
                )
            except asyncpg.UniqueViolationError:
                raise Conflict("another account uses this email", code="email_taken") from None
            await audit.record_own(conn, user_id=user.user_id, action="profile.update", details={"fields": fields})
        await announce(self.redis, self.keys, users=[user.user_id])
        return replace(user, name=changes.get("name", user.name), email=changes.get("email", user.email))
