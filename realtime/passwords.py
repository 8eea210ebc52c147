"""Password hashing (argon2id, OWASP parameters) off the event loop, and password rules."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from realtime.errors import BadRequest

MIN_LENGTH = 12
MAX_LENGTH = 256


def check_rules(password: object, *, email: str) -> str:
    if not isinstance(password, str):
        raise BadRequest("password must be a string", code="weak_password")
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise BadRequest(f"password must be {MIN_LENGTH} to {MAX_LENGTH} characters long", code="weak_password")
    if len(set(password)) < 5:
        raise BadRequest("password must use at least 5 different characters", code="weak_password")
    local = email.partition("@")[0].lower()
    if len(local) >= 4 and local in password.lower():
        raise BadRequest("password must not contain your email address", code="weak_password")
    return password


class Passwords:
    """argon2id at OWASP's m=19 MiB, t=2, p=1. Each hash holds a core for ~20 ms: the
    semaphore keeps a burst of logins from queueing the whole default executor."""

    def __init__(self, concurrency: int = 2) -> None:
        self._hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)
        self._slots = asyncio.Semaphore(concurrency)
        # Made now, not at the first unknown account: that login would cost a hash more
        # than the others, and tell that the account does not exist.
        self._dummy = self._hasher.hash("procreche timing equaliser")

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, hashed: str | None, password: str) -> bool:
        """Always spends one argon2 verification, also for unknown accounts, so that timing
        does not tell which emails have an account."""
        async with self._slots:
            return await asyncio.to_thread(self._verify, self._dummy if hashed is None else hashed, password)

    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return self._hasher.verify(hashed, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
