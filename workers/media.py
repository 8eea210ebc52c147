"""The media worker: uploads → metadata-free renditions in the store, off every event loop.

Each job runs `python -m workers.media_processing` in a process of its own: a decoder
crashing on a hostile file, looping, or eating memory takes down that process only (it is
killed after PROCESS_TIMEOUT_S, and its memory is capped). Up to `media_processes` jobs
run at once. The queue is the `media` table (realtime/media.py): jobs are claimed under a
lease, so a worker killed mid-job leaves the job to another worker once the lease ends.

When a media is ready or rejected its uploader hears it on `user:<id>` (an event, op
`media`); `GET /api/media/<id>/status` stays the reference for a client that was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from realtime.bus import Bus
from realtime.database import Pool, woken_by
from realtime.errors import ProcrecheError
from realtime.media import MAX_ATTEMPTS, NOTIFY_CHANNEL, Media, MediaLibrary, object_key
from realtime.media_store import MediaStore, MissingObject
from realtime.media_types import MediaType
from realtime.settings import Settings
from workers.media_processing import Processed
from workers.queue import work_queue

log = logging.getLogger("procreche.media")

PROCESS_TIMEOUT_S = 600.0
# Longer than a job may run, so a live worker's job is never taken from it.
LEASE = timedelta(seconds=PROCESS_TIMEOUT_S + 60)
POLL_S = 5.0
RETRY_LATER = timedelta(seconds=10)
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "video/mp4": "mp4"}


class ProcessingFailed(Exception):
    """The processing process died, hung or answered nonsense: the file's fault or ours,
    unknown, so the job is retried up to MAX_ATTEMPTS times."""


async def run_processing(source: Path, media_type: MediaType, out_dir: Path, settings: Settings) -> dict[str, Any]:
    """One file through workers.media_processing in a fresh process: its JSON answer."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.media_processing",
        str(source),
        media_type.value,
        str(out_dir),
        str(settings.media_max_pixels),
        str(settings.media_max_seconds),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), PROCESS_TIMEOUT_S)
    except BaseException:
        # Timed out, or we are cancelled: the process must not outlive the job.
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise ProcessingFailed(f"exit {process.returncode}: {stderr.decode(errors='replace')[-500:]}")
    try:
        answer: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise ProcessingFailed(f"no answer: {stdout[-200:]!r}") from exc
    return answer


class MediaWorker:
    def __init__(self, pool: Pool, store: MediaStore, bus: Bus, settings: Settings) -> None:
        self.pool = pool
        self.library = MediaLibrary(pool)
        self.store = store
        self.bus = bus
        self.settings = settings
        self.work_dir = settings.data_dir / "media-work"
        # Jobs by outcome, for /metrics: ready, rejected (the file is refused), and failed
        # processing attempts (retried, up to MAX_ATTEMPTS).
        self.processed = 0
        self.rejected = 0
        self.failed_attempts = 0
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def close(self) -> None:
        """Stop taking jobs; jobs in hand finish (or are cancelled with the task)."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Process until `close()`: `media_processes` loops, woken by NOTIFY on new uploads
        and polling every POLL_S in case a notification was missed."""
        async with woken_by(self.pool, NOTIFY_CHANNEL, self._wake), asyncio.TaskGroup() as loops:
            for n in range(self.settings.media_processes):
                loops.create_task(
                    work_queue(
                        "media worker",
                        lambda: self.library.claim(LEASE),
                        self.handle,
                        wake=self._wake,
                        stopping=self._stopping,
                        idle_s=lambda: POLL_S,
                    ),
                    name=f"media {n}",
                )

    async def handle(self, media: Media) -> None:
        """Process one claimed media: store its renditions and mark it ready, or reject it."""
        if media.attempts > MAX_ATTEMPTS:
            log.error("media %s failed %d times; rejected", media.id, MAX_ATTEMPTS)
            await self._reject(media, "media_unreadable")
            return
        assert media.incoming_key is not None
        assert media.content_type is not None
        work = Path(await asyncio.to_thread(self._make_work_dir))
        try:
            source = work / "incoming"
            try:
                await self.store.fetch(media.incoming_key, source)
            except MissingObject:
                # The uploaded file is gone (lost by the store, or a backup without it):
                # no attempt can succeed, and the worker must go on with the next job.
                log.warning("media %s: its uploaded file is missing; rejected", media.id)
                await self._reject(media, "media_unreadable")
                return
            try:
                answer = await run_processing(source, MediaType(media.content_type), work / "out", self.settings)
            except (ProcessingFailed, TimeoutError) as exc:
                self.failed_attempts += 1
                log.warning("media %s: processing attempt %d failed: %s", media.id, media.attempts, exc)
                await self.library.retry_later(media.id, RETRY_LATER, give_back=False)
                return
            if "rejected" in answer:
                await self._reject(media, answer["rejected"]["code"])
                return
            await self._store(media, Processed.from_json(answer["processed"]))
        except ProcrecheError:
            await self.library.retry_later(media.id, RETRY_LATER, give_back=True)
            raise
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    def _make_work_dir(self) -> str:
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        out = tempfile.mkdtemp(dir=self.work_dir, prefix="job-")
        Path(out, "out").mkdir(mode=0o700)
        return out

    async def _store(self, media: Media, processed: Processed) -> None:
        renditions: dict[str, Any] = {}
        for r in processed.renditions:
            key = object_key(media.structure_id, media.id, f"{r.name}.{EXTENSIONS[r.content_type]}")
            await self.store.put(key, r.path, r.content_type)
            renditions[r.name] = {
                "key": key,
                "type": r.content_type,
                "width": r.width,
                "height": r.height,
                "bytes": r.bytes,
            }
        done = await self.library.complete(
            media.id,
            width=processed.width,
            height=processed.height,
            duration_ms=processed.duration_ms,
            renditions=renditions,
        )
        if not done:
            return
        assert media.incoming_key is not None
        await self.store.delete([media.incoming_key])
        self.processed += 1
        log.info("media %s ready (%s %dx%d)", media.id, processed.kind, processed.width, processed.height)
        await self._tell(media, {"state": "ready"})

    async def _reject(self, media: Media, code: str) -> None:
        if await self.library.reject(media.id, code) and media.incoming_key is not None:
            # Nothing of a refused file is kept.
            await self.store.delete([media.incoming_key])
        self.rejected += 1
        log.info("media %s rejected: %s", media.id, code)
        await self._tell(media, {"state": "rejected", "code": code})

    async def _tell(self, media: Media, outcome: dict[str, Any]) -> None:
        if media.uploader_id is None:
            return
        await self.bus.tell_user(media.uploader_id, "media", {"id": media.id} | outcome)
