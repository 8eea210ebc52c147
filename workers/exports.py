"""The export worker: builds requested exports into zips in the media store, and deletes
them once expired.

Jobs come from the `exports` table (realtime/exports.py), claimed under a lease that each
progress step renews; NOTIFY wakes the worker on a new request, and it polls in case a
notification was missed. A failed build is retried after a delay, MAX_ATTEMPTS times in
all, then the export is `failed`. The requester hears each state change and each 10 % of
progress on `user:<id>` (an event, op `export`); `GET /api/exports/{id}` stays the
reference for a client that was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from realtime.bus import Bus
from realtime.database import Pool, woken_by
from realtime.directory import Directory
from realtime.errors import ProcrecheError, Unavailable
from realtime.exports import CONTENT_TYPE, MAX_ATTEMPTS, NOTIFY_CHANNEL, Export, Exports, object_key
from realtime.media_store import MediaStore
from realtime.permissions import Principal, may_export
from realtime.settings import Settings
from workers.export_builder import build
from workers.export_scopes import Refused
from workers.queue import work_queue

log = logging.getLogger("procreche.exports")

LEASE = timedelta(minutes=10)
# Progress is written (renewing the lease) at least this often while a build runs.
RENEW_S = 60.0
# The requester is told of progress in steps of at least this many percent.
STEP = 10
POLL_S = 5.0
SWEEP_S = 300.0
RETRY_LATER = timedelta(seconds=30)


class ClaimLost(Exception):
    """Another worker took the job over (our lease ran out): stop building it."""


class ExportWorker:
    def __init__(
        self,
        pool: Pool,
        store: MediaStore,
        bus: Bus,
        settings: Settings,
        *,
        poll_s: float = POLL_S,
        sweep_s: float = SWEEP_S,
        retry_later: timedelta = RETRY_LATER,
    ) -> None:
        self.pool = pool
        self.exports = Exports(pool)
        self.directory = Directory(pool)
        self.store = store
        self.bus = bus
        self.settings = settings
        self.work_dir = settings.data_dir / "export-work"
        self.poll_s = poll_s
        self.sweep_s = sweep_s
        self.retry_later = retry_later
        self.built = 0
        self._next_sweep = 0.0
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def close(self) -> None:
        """Stop taking jobs; a build in hand finishes (or is cancelled with the task)."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Build and sweep until `close()`."""
        async with woken_by(self.pool, NOTIFY_CHANNEL, self._wake):
            await work_queue(
                "export worker",
                lambda: self.exports.claim(LEASE),
                self.handle,
                wake=self._wake,
                stopping=self._stopping,
                idle_s=self._idle_wait,
                first=self._sweep_when_due,
            )

    def _idle_wait(self) -> float:
        return max(0.0, min(self.poll_s, self._next_sweep - time.monotonic()))

    async def _sweep_when_due(self) -> None:
        if time.monotonic() < self._next_sweep:
            return
        await self.sweep()
        self._next_sweep = time.monotonic() + self.sweep_s

    async def sweep(self) -> int:
        """Delete the zips of exports past their expiry and mark them expired."""
        swept = 0
        while lapsed := await self.exports.lapsed():
            for export in lapsed:
                if export.object_key is not None:
                    await self.store.delete([export.object_key])
                if await self.exports.expired(export):
                    swept += 1
                    log.info("export %s expired; its zip is deleted", export.id)
                    await self.tell(export, "expired", export.progress)
        return swept

    async def handle(self, export: Export) -> None:
        """Build one claimed export, or retry it later, or fail it."""
        if export.attempts > MAX_ATTEMPTS:
            # Claimed that often without an outcome: its workers died mid-build.
            log.error("export %s: %d attempts without an outcome; failed", export.id, MAX_ATTEMPTS)
            await self._fail(export)
            return
        principal = None if export.requester_id is None else await self.directory.principal(export.requester_id)
        # Decided again now: rights lost since the request mean no export.
        if principal is None or not may_export(principal, export.scope, export.structure_id).allowed:
            log.warning("export %s: the requester may no longer export this; failed", export.id)
            await self._fail(export)
            return
        await self.tell(export, "running", 0)
        try:
            ready = await self._build(export, principal)
            self.built += 1
            log.info("export %s ready (%s, %d bytes)", export.id, export.scope, ready.bytes)
            await self.tell(ready, "ready", 100)
        except ClaimLost:
            log.warning("export %s was taken over by another worker", export.id)
        except Refused as exc:
            log.warning("export %s: %s; failed", export.id, exc)
            await self._fail(export)
        except Exception as exc:
            # Any fault, the data's or ours: retried, a bounded number of times.
            log.warning("export %s: attempt %d failed: %r", export.id, export.attempts, exc)
            if export.attempts >= MAX_ATTEMPTS:
                await self._fail(export)
            elif await self.exports.retry_later(export, self.retry_later * export.attempts):
                await self.tell(export, "queued", 0)

    async def _build(self, export: Export, principal: Principal) -> Export:
        work = Path(await asyncio.to_thread(self._make_work_dir))
        try:
            reporter = Reporter(self, export)
            path, size = await build(self.pool, self.directory, self.store, export, principal, work, reporter)
            key = object_key(export.id)
            await self.store.put(key, path, CONTENT_TYPE)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        ready = await self.exports.complete(export, key=key, size=size, days=self.settings.export_days)
        if ready is None:
            raise ClaimLost
        return ready

    def _make_work_dir(self) -> str:
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return tempfile.mkdtemp(dir=self.work_dir, prefix="export-")

    async def _fail(self, export: Export) -> None:
        # A zip stored by an attempt that failed after storing it must not outlive the export.
        with contextlib.suppress(ProcrecheError, OSError):
            await self.store.delete([object_key(export.id)])
        if await self.exports.fail(export):
            await self.tell(export, "failed", export.progress)

    async def tell(self, export: Export, state: str, progress: int) -> None:
        if export.requester_id is None:
            return
        try:
            await self.bus.tell_user(
                export.requester_id, "export", {"id": export.id, "state": state, "progress": progress}
            )
        except Unavailable as exc:
            # The event is a courtesy: the export's state is in PostgreSQL, which clients poll.
            log.warning("export %s: event not sent: %s", export.id, exc)


class Reporter:
    """One build's progress: written to PostgreSQL (which renews the lease) at each step
    told, and at least every RENEW_S; told to the requester in steps of STEP percent."""

    def __init__(self, worker: ExportWorker, export: Export) -> None:
        self.worker = worker
        self.export = export
        self.told = 0
        self.saved_at = time.monotonic()

    async def __call__(self, progress: int) -> None:
        now = time.monotonic()
        step = progress >= self.told + STEP
        if not step and now - self.saved_at < RENEW_S:
            return
        if not await self.worker.exports.progress(self.export, progress, LEASE):
            raise ClaimLost
        self.saved_at = now
        if step:
            self.told = progress
            await self.worker.tell(self.export, "running", progress)
