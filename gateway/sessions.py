"""The open WebSocket sessions of this process, by user, token and channel, so that a fact
change announced over Redis reaches the connections it concerns within a second: their
rights are checked again, and what is no longer allowed is unsubscribed or closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from realtime.errors import CloseCode
from realtime.invalidation import Change

log = logging.getLogger("procreche.sessions")


class LiveSession(Protocol):
    user_id: int
    name: str
    token_hash: bytes

    def channels(self) -> Iterable[str]: ...

    async def revalidate(self) -> None: ...

    def revoke(self) -> None: ...

    def close(self, code: CloseCode, reason: str) -> None: ...

    def push(self, frame: dict[str, Any]) -> None: ...


class SessionRegistry:
    def __init__(self) -> None:
        self._by_user: dict[int, set[LiveSession]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.empty = asyncio.Event()
        self.empty.set()

    def add(self, session: LiveSession) -> None:
        self._by_user.setdefault(session.user_id, set()).add(session)
        self.empty.clear()

    def remove(self, session: LiveSession) -> None:
        sessions = self._by_user.get(session.user_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._by_user[session.user_id]
                if not self._by_user:
                    self.empty.set()

    def of_user(self, user_id: int) -> set[LiveSession]:
        return self._by_user.get(user_id, set())

    def all(self) -> list[LiveSession]:
        return [s for sessions in self._by_user.values() for s in sessions]

    def apply(self, change: Change) -> None:
        """Called for every announced change: no I/O here, the re-checks run as tasks."""
        sessions = self.all()
        affected_channels = (
            {f"family:{i}" for i in change.families}
            | {f"child:{i}" for i in change.children}
            | {f"group:{i}" for i in change.groups}
            | {f"structure:{i}" for i in change.structures}
        )
        targets: set[LiveSession] = set()
        for session in sessions:
            if session.token_hash in change.sessions:
                session.revoke()
                continue
            if session.user_id in change.users or not affected_channels.isdisjoint(session.channels()):
                targets.add(session)
        for session in targets:
            task = asyncio.get_running_loop().create_task(self._revalidate(session))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _revalidate(self, session: LiveSession) -> None:
        try:
            await session.revalidate()
        except Exception:
            # The session stays as it was; its next request re-reads what it needs.
            log.exception("re-checking a session's rights failed")

    def close_all(self, code: CloseCode, reason: str) -> None:
        """Without the live feed, announced changes may be missed: every session reconnects."""
        for session in self.all():
            session.close(code, reason)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
