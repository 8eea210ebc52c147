"""The loop of a worker that takes jobs from a PostgreSQL queue (media, exports): claim a
job, handle it, and when there is none sleep until NOTIFY wakes the worker or the poll
interval passes (a notification may be lost). A backing server's trouble is logged and
retried with exponential backoff; anything else is a bug and ends the worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from realtime.errors import ProcrecheError

log = logging.getLogger("procreche.queue")

Job = TypeVar("Job")
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0


async def work_queue(
    name: str,
    claim: Callable[[], Awaitable[Job | None]],
    handle: Callable[[Job], Awaitable[None]],
    *,
    wake: asyncio.Event,
    stopping: asyncio.Event,
    idle_s: Callable[[], float],
    first: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Until `stopping` is set. `first`: housekeeping run before each claim (it decides
    itself whether it is due); `idle_s`: how long to sleep when the queue is empty."""
    backoff = FIRST_BACKOFF_S
    while not stopping.is_set():
        try:
            if first is not None:
                await first()
            job = await claim()
            if job is None:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), idle_s())
                continue
            await handle(job)
            backoff = FIRST_BACKOFF_S
        except (ProcrecheError, OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("%s: %s; retrying in %.1fs", name, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
