"""The persistence worker: ingest streams → Postgres, acknowledged only after commit.

A worker consumes a set of partitions (`PROCRECHE_WORKER_PARTITIONS`, default all of them):
each partition's ingest stream through the consumer group `persist`, in its own loop. Each
batch, read from one stream, is inserted idempotently, then XACKed and XDELed. Entries a
dead worker left pending are reclaimed with XAUTOCLAIM once idle for `reclaim_idle_ms`. A
SIGKILL at any point loses nothing (unacknowledged entries stay pending) and duplicates
nothing (the insert is idempotent on the message id and on (channel, seq)).

Every Redis command, and every pipeline, touches the keys of one partition only, i.e. one
hash tag `{P}` and so one Redis Cluster slot: the ingest stream, its dead letters, and the
`seq`/`epoch` keys of the channels of that partition (realtime/keys.py).

Every row costs the worker CPU, so the path from a stream entry to PostgreSQL builds no
object per entry beyond what redis-py returns: a record becomes a plain tuple (`record_row`,
msgpack in C), a batch becomes column arrays and one JSON document of bodies for a single
INSERT (realtime/message_store.py), and hiredis parses the replies. About 7 µs of CPU per
row in all, where PostgreSQL spends 11 (bench/capacity.py, 2 cores).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from realtime import keys as K
from realtime.channels import Channel
from realtime.database import Pool
from realtime.keys import CONSUMER_GROUP, Keys
from realtime.message_store import MessageRow, MessageStore, record_row
from realtime.metrics import BATCH_BUCKETS, Histogram
from realtime.settings import Settings

log = logging.getLogger("procreche.worker")

BLOCK_MS = 1000
RECLAIM_EVERY_S = 1.0
MAX_BACKOFF_S = 5.0


# A stream entry as redis-py returns it: (id, {field: value}), bytes throughout (typed loosely
# so that the fields go back into XADD as they are, for a dead letter).
Item: TypeAlias = tuple[bytes, dict[Any, Any]]


@dataclass(slots=True)
class Batch:
    """The entries of one read, decoded for the store without an object per entry.

    Messages become rows (MessageRow) as they are read; the entry behind each row stays at
    the same index in `message_entries`, so that a refused row's entry, with all its raw
    fields, can be dead-lettered."""

    stream: str
    entries: list[Item] = field(default_factory=list)  # all of them, to acknowledge
    rows: list[MessageRow] = field(default_factory=list)
    message_entries: list[Item] = field(default_factory=list)
    withdrawals: list[tuple[str, str, str]] = field(default_factory=list)  # (message id, channel, reason)
    undecodable: list[Item] = field(default_factory=list)

    @classmethod
    def decode(cls, stream: str, items: list[Item]) -> Batch:
        batch = cls(stream)
        for item in items:
            entry_id, fields = item
            if not fields:  # an entry deleted while pending comes back with no fields
                continue
            batch.entries.append(item)
            try:
                if b"w" in fields:
                    batch.withdrawals.append((fields[b"w"].decode(), fields[b"c"].decode(), fields[b"r"].decode()))
                else:
                    batch.rows.append(record_row(int(fields[b"s"]), fields[b"m"]))
                    batch.message_entries.append(item)
            except (KeyError, ValueError, TypeError):
                log.exception("ingest entry %s in %s cannot be decoded; dead-lettered", entry_id, stream)
                batch.undecodable.append(item)
        return batch


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class PersistenceWorker:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        store: MessageStore,
        *,
        batch: int,
        reclaim_idle_ms: int,
        name: str | None = None,
        partitions: Collection[int] | None = None,
        history_maxlen: int = Settings.history_maxlen,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.store = store
        self.batch = batch
        self.reclaim_idle_ms = reclaim_idle_ms
        self.history_maxlen = history_maxlen  # the channels' capped history, for a message renumbered
        self.name = name or consumer_name()
        self.partitions = sorted(set(range(keys.partitions) if partitions is None else partitions))
        if not self.partitions:
            raise ValueError("a persistence worker needs at least one partition")
        if not set(self.partitions) <= set(range(keys.partitions)):
            raise ValueError(f"partitions {self.partitions} are not all within 0-{keys.partitions - 1}")
        self.streams = [keys.ingest(p) for p in self.partitions]
        # For /metrics (workers/metrics.py): rows stored, messages published again under a
        # new seq, entries set aside, batches retried, and the entries of each batch stored.
        self.persisted = 0
        self.renumbered = 0
        self.dead_lettered = 0
        self.failures = 0
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self._renumber = redis.register_script(K.RENUMBER)
        self._stopping = asyncio.Event()

    @classmethod
    def configured(cls, settings: Settings, redis: Redis, pool: Pool) -> PersistenceWorker:
        return cls(
            redis,
            Keys(settings.redis_prefix, settings.partitions),
            MessageStore(pool),
            batch=settings.worker_batch,
            reclaim_idle_ms=settings.reclaim_idle_ms,
            partitions=settings.worker_partitions,
            history_maxlen=settings.history_maxlen,
        )

    def close(self) -> None:
        """Finish the batch in hand, then return from `run`."""
        self._stopping.set()

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            await self._ensure_group(stream)

    async def _ensure_group(self, stream: str) -> None:
        try:
            await self.redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, *, burst: bool = False) -> None:
        """Persist until `close()`; with burst=True, until nothing is left to persist.

        One loop per partition, each blocking on its own stream. Why not one loop over all
        partitions: an XREADGROUP naming several streams spans several hash slots (CROSSSLOT
        on Redis Cluster), and taking the partitions in turn forces a choice between a long
        BLOCK (an entry waits behind the other partitions' blocks) and a short one (an idle
        worker spins through partitions). Here each partition's entries are picked up as
        soon as they are written, an idle worker issues one blocking read (and one
        XAUTOCLAIM) per partition and second, and a failing partition (a batch PostgreSQL
        keeps refusing, a Redis shard down) backs off alone. The cost is one Redis
        connection per owned partition, held by its blocking read; PostgreSQL connections
        stay bounded by the pool, which the partitions' batches share.
        """
        async with asyncio.TaskGroup() as loops:
            for stream in self.streams:
                loops.create_task(self._run_partition(stream, burst=burst), name=f"persist {stream}")

    async def _run_partition(self, stream: str, *, burst: bool) -> None:
        backoff = 0.1
        own_pending = True  # after a start or a failure, our own pending entries come first
        next_reclaim = 0.0
        loop = asyncio.get_running_loop()
        need_group = True
        while not self._stopping.is_set():
            try:
                if need_group:
                    await self._ensure_group(stream)
                    need_group = False
                batch = Batch(stream)
                if loop.time() >= next_reclaim:
                    batch = await self._reclaim(stream)
                    next_reclaim = loop.time() + RECLAIM_EVERY_S
                if not batch.entries and own_pending:
                    batch = await self._read(stream, "0", block=None)
                    own_pending = bool(batch.entries)
                if not batch.entries:
                    batch = await self._read(stream, ">", block=None if burst else BLOCK_MS)
                if not batch.entries:
                    if burst:
                        return
                    continue
                await self._persist(batch)
                backoff = 0.1
            except (RedisError, OSError, TimeoutError) as exc:
                own_pending = True
                # A Redis restarted without persistence comes back without the groups.
                need_group = isinstance(exc, ResponseError) and "NOGROUP" in str(exc)
                self.failures += 1
                log.warning("persistence of %s: %s; retrying in %.1fs", stream, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            except Exception:
                # Postgres errors and anything unforeseen: keep the entries pending, retry.
                own_pending = True
                self.failures += 1
                log.exception("persistence of %s failed; retrying in %.1fs", stream, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _read(self, stream: str, start: str, *, block: int | None) -> Batch:
        # One stream per command: one hash slot. redis-py types replies loosely:
        # [[stream, [(entry_id, {field: value})]]] or None.
        reply: Any = await self.redis.xreadgroup(
            CONSUMER_GROUP,
            self.name,
            {stream: start},
            count=self.batch,
            block=block,
        )
        return Batch.decode(stream, reply[0][1] if reply else [])

    async def _reclaim(self, stream: str) -> Batch:
        reply: Any = await self.redis.xautoclaim(
            stream,
            CONSUMER_GROUP,
            self.name,
            min_idle_time=self.reclaim_idle_ms,
            start_id="0-0",
            count=self.batch,
        )
        return Batch.decode(stream, reply[1])

    async def _persist(self, batch: Batch) -> None:
        """Store a batch; renumber the messages whose seq PostgreSQL gave to another; set
        aside what cannot be stored; acknowledge the batch's entries in its stream."""
        stream, rows = batch.stream, batch.rows
        try:
            taken = await self.store.insert(rows)
            unstorable: set[str] = set()
        except asyncpg.DataError:
            # One message PostgreSQL cannot store must not stop the partition: store the
            # batch one by one and set the bad ones aside.
            taken, unstorable = await self._insert_one_by_one(rows)
        # After the inserts: a withdrawal follows its message in the stream.
        await self.store.withdraw(batch.withdrawals)
        dead: list[tuple[Item, MessageRow | None]] = [(item, None) for item in batch.undecodable]
        renumber: dict[str, list[tuple[Item, MessageRow]]] = {}
        for item, row in zip(batch.message_entries, rows, strict=True):
            if row[0] in unstorable:
                dead.append((item, row))
            elif row[0] in taken:
                renumber.setdefault(row[1], []).append((item, row))
        # PostgreSQL's highest seq of each channel, read before the transaction: RENUMBER
        # raises the channel's sequence above it.
        floors = {channel: await self.store.max_seq(channel) for channel in renumber}
        # One transaction, one partition: the dead-letter stream carries the ingest stream's
        # tag, and a channel's keys carry its partition's, which is the stream's (the publish
        # script wrote the entry there). Atomic, so that a crash cannot renumber a message
        # and leave its entry to be renumbered again.
        ids = [entry_id for entry_id, _ in batch.entries]
        async with self.redis.pipeline(transaction=True) as pipe:
            for (entry_id, fields), _ in dead:
                pipe.xadd(self.keys.dead_letter(stream), {b"id": entry_id, **fields})
            for channel, messages in renumber.items():
                ck = self.keys.channel(Channel.parse(channel))
                await self._renumber(
                    keys=[ck.seq, ck.epoch, ck.history, ck.ingest, *(ck.dedup(r[3], r[5]) for _, r in messages)],
                    args=[
                        floors[channel],
                        secrets.token_hex(8),
                        ck.live,
                        self.history_maxlen,
                        *(v for (_, fields), row in messages for v in (row[0], fields[b"m"])),
                    ],
                    client=pipe,
                )
            pipe.xack(stream, CONSUMER_GROUP, *ids)
            pipe.xdel(stream, *ids)
            replies = await pipe.execute()
        renumbered = iter(replies[len(dead) : len(dead) + len(renumber)])
        for channel, messages in renumber.items():
            for (_, moved), seq in zip(messages, next(renumbered), strict=True):
                # Redis came back without its latest writes and gave this seq out again.
                log.warning(
                    "persistence: message %s in %s had seq %d, which PostgreSQL holds for another message; "
                    "published again as seq %d under a new epoch",
                    moved[0],
                    channel,
                    moved[2],
                    seq,
                )
        for (entry_id, _), aside in dead:
            log.error(
                "persistence: ingest entry %s of %s set aside in %s (message %s in %s)",
                entry_id,
                stream,
                self.keys.dead_letter(stream),
                aside[0] if aside else "undecodable",
                aside[1] if aside else "?",
            )
        self.persisted += len(rows) - len(taken) - len(unstorable)
        self.renumbered += len(taken)
        self.dead_lettered += len(dead)
        self.batch_sizes.observe(len(batch.entries))

    async def _insert_one_by_one(self, rows: list[MessageRow]) -> tuple[set[str], set[str]]:
        """The ids whose seq is taken, and those PostgreSQL cannot store."""
        taken: set[str] = set()
        unstorable: set[str] = set()
        for row in rows:
            try:
                taken |= await self.store.insert([row])
            except asyncpg.DataError:
                log.exception("message %s in %s cannot be stored", row[0], row[1])
                unstorable.add(row[0])
        return taken, unstorable
