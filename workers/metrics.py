"""The workers' metrics: what the persistence and media workers count as they go, and what
only their servers know — the ingest streams of the persistence worker's partitions (Redis)
and the media queue (PostgreSQL) — read at scrape time, at most once a second.

Every Redis command here names one partition's keys (one hash slot, as the worker's own):
a pipeline per partition, plus a keyless TIME so that entry ages are measured on Redis's
clock, which wrote the entry ids.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from realtime.keys import CONSUMER_GROUP
from realtime.metrics import Family, Metrics, Source, counter, gauge, histogram
from workers.media import MediaWorker
from workers.persistence import PersistenceWorker

# Scrapes closer together than this share one reading of the servers.
SAMPLE_EVERY_S = 1.0
QUEUE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class IngestState:
    """One partition's ingest stream, as Redis sees it now."""

    entries: int  # not yet persisted (entries are deleted once persisted), pending ones included
    pending: int  # read by a worker, not yet acknowledged
    oldest_age_s: float  # age of the oldest entry not yet persisted; 0 if none
    dead_letters: int


class SampledSource(Source):
    """A source reading a server: one reading at a time, shared by the scrapes of the next
    SAMPLE_EVERY_S; after a failure, none of its sampled numbers is reported (stale ones
    would say all is well while nothing is known)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._at: float | None = None

    async def refresh(self) -> None:
        async with self._lock:
            loop = asyncio.get_running_loop()
            if self._at is not None and loop.time() - self._at < SAMPLE_EVERY_S:
                return
            try:
                await self.sample()
            except BaseException:
                self._at = None
                self.forget()
                raise
            self._at = loop.time()

    async def sample(self) -> None:
        raise NotImplementedError

    def forget(self) -> None:
        raise NotImplementedError


class PersistenceSource(SampledSource):
    name = "persistence"

    def __init__(self, worker: PersistenceWorker) -> None:
        super().__init__()
        self.worker = worker
        self.ingest: dict[int, IngestState] = {}

    async def sample(self) -> None:
        seconds, micros = await self.worker.redis.time()
        now_ms = seconds * 1000 + micros // 1000
        states = await asyncio.gather(*(self._partition(p, now_ms) for p in self.worker.partitions))
        self.ingest = dict(zip(self.worker.partitions, states, strict=True))

    def forget(self) -> None:
        self.ingest = {}

    async def _partition(self, partition: int, now_ms: int) -> IngestState:
        keys = self.worker.keys
        stream = keys.ingest(partition)
        async with self.worker.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(stream)
            pipe.xpending(stream, CONSUMER_GROUP)
            pipe.xrange(stream, "-", "+", count=1)
            pipe.xlen(keys.dead_letter(stream))
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        entries, pending, first, dead = replies
        if isinstance(pending, ResponseError) and "NOGROUP" in str(pending):
            pending = {"pending": 0}  # no worker has created the group yet
        for reply in (entries, pending, first, dead):
            if isinstance(reply, Exception):
                raise reply
        oldest = 0.0
        if first:
            entry_ms = int(first[0][0].split(b"-")[0])
            oldest = max(0.0, (now_ms - entry_ms) / 1000)
        return IngestState(int(entries), int(pending["pending"]), oldest, int(dead))

    def families(self) -> Iterable[Family]:
        w = self.worker
        yield counter("procreche_persisted_messages_total", "Messages this worker stored in PostgreSQL.", w.persisted)
        yield counter(
            "procreche_renumbered_messages_total",
            "Messages this worker published again above PostgreSQL under a new epoch: Redis had given "
            "their seq out again after losing writes (operations.md §9).",
            w.renumbered,
        )
        yield counter(
            "procreche_dead_lettered_total",
            "Ingest entries this worker set aside in a dead-letter stream (operations.md §9).",
            w.dead_lettered,
        )
        yield counter(
            "procreche_persistence_failures_total",
            "Batches that failed and were retried (Redis or PostgreSQL errors).",
            w.failures,
        )
        yield histogram(
            "procreche_persistence_batch_entries", "Ingest entries per batch stored by this worker.", w.batch_sizes
        )
        if not self.ingest:
            return
        by_partition = {str(p): s for p, s in self.ingest.items()}
        yield gauge(
            "procreche_ingest_lag_entries",
            "Entries of a partition's ingest stream not yet persisted (XLEN; pending ones included).",
            {p: s.entries for p, s in by_partition.items()},
            label="partition",
        )
        yield gauge(
            "procreche_ingest_lag_seconds",
            "Age of the oldest entry of a partition's ingest stream not yet persisted (0: none).",
            {p: s.oldest_age_s for p, s in by_partition.items()},
            label="partition",
        )
        yield gauge(
            "procreche_ingest_pending_entries",
            "Entries read by a worker of the group `persist` and not yet acknowledged (XPENDING).",
            {p: s.pending for p, s in by_partition.items()},
            label="partition",
        )
        yield gauge(
            "procreche_ingest_dead_letters",
            "Entries in a partition's dead-letter stream: each needs an operator (operations.md §9).",
            {p: s.dead_letters for p, s in by_partition.items()},
            label="partition",
        )


class MediaSource(SampledSource):
    name = "media"

    def __init__(self, worker: MediaWorker) -> None:
        super().__init__()
        self.worker = worker
        self.queue: tuple[int, float] | None = None

    async def sample(self) -> None:
        row = await self.worker.pool.fetchrow(
            "SELECT count(*) AS depth, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest"
            " FROM media WHERE state = 'processing'",
            timeout=QUEUE_TIMEOUT_S,
        )
        assert row is not None
        self.queue = (row["depth"], row["oldest"])

    def forget(self) -> None:
        self.queue = None

    def families(self) -> Iterable[Family]:
        w = self.worker
        yield counter(
            "procreche_media_jobs_total",
            "Media jobs of this worker by outcome: ready, rejected (the file is refused), failed (an attempt that "
            "crashed or timed out; retried, then rejected after 3).",
            {"ready": w.processed, "rejected": w.rejected, "failed": w.failed_attempts},
            label="outcome",
        )
        if self.queue is None:
            return
        depth, oldest = self.queue
        yield gauge(
            "procreche_media_queue_depth", "Uploads waiting for processing, deployment-wide (state processing).", depth
        )
        yield gauge(
            "procreche_media_queue_oldest_seconds",
            "Age of the oldest upload waiting for processing (0: none).",
            oldest,
        )


@contextlib.asynccontextmanager
async def reported(metrics: Metrics | None, persistence: PersistenceWorker, media: MediaWorker) -> AsyncIterator[None]:
    """The workers' metrics in `metrics` (if any) while the block runs."""
    if metrics is None:
        yield
        return
    forget = [metrics.add(PersistenceSource(persistence)), metrics.add(MediaSource(media))]
    try:
        yield
    finally:
        for remove in forget:
            remove()
