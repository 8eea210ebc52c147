"""Retention: a child's data is erased `retention_months` after their enrolment ended (a
setting of each structure, 12 months by default), by this scheduled job.

Every `RETENTION_EVERY_S` the job looks for children whose `left_on` is more than their
structure's retention before today, and erases each as an admin's erasure would
(realtime/erasure.py), audited `erasure.child` with `"why": "retention"` and no actor.
Several workers may run it at once: an advisory lock makes one of them do a round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from redis.asyncio import Redis

from realtime.database import Pool
from realtime.erasure import Eraser, Subject
from realtime.errors import NotFound, ProcrecheError
from realtime.keys import Keys
from realtime.media_store import MediaStore

log = logging.getLogger("procreche.retention")

RETENTION_EVERY_S = 3600.0
# One round at a time over the whole deployment: the key is this job's alone.
LOCK_KEY = 0x70726574656E  # "preten"
DUE = """
SELECT c.id, c.structure_id FROM children c JOIN structures s ON s.id = c.structure_id
WHERE c.left_on IS NOT NULL AND c.left_on < current_date - make_interval(months => s.retention_months)
ORDER BY c.left_on
"""


class RetentionJob:
    def __init__(self, pool: Pool, redis: Redis, keys: Keys, store: MediaStore, every_s: float = RETENTION_EVERY_S):
        self.pool = pool
        self.eraser = Eraser(pool, redis, keys, store)
        self.every_s = every_s
        self.erased = 0
        self._stopping = asyncio.Event()

    def close(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.round()
            except (ProcrecheError, OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("retention round failed (%s); next round in %.0f s", exc, self.every_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.every_s)

    async def round(self) -> int:
        """Erase every child past retention; how many were erased."""
        done = 0
        async with self.pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
                return 0  # another worker is doing this round
            try:
                for row in await conn.fetch(DUE):
                    with contextlib.suppress(NotFound):  # erased meanwhile by an admin
                        subject = Subject("child", row["id"])
                        await self.eraser.erase(row["structure_id"], subject, None, why="retention")
                        done += 1
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        if done:
            log.info("retention: %d children's data erased", done)
        self.erased += done
        return done
