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
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from realtime.channels import Channel
from realtime.database import Pool
from realtime.keys import CONSUMER_GROUP, Keys
from realtime.message_store import MessageStore
from realtime.messages import Message, unpack_record
from realtime.settings import Settings

log = logging.getLogger("procreche.worker")

BLOCK_MS = 1000
RECLAIM_EVERY_S = 1.0
MAX_BACKOFF_S = 5.0


@dataclass(frozen=True, slots=True)
class Entry:
    stream: str
    entry_id: bytes
    message: Message | None
    fields: dict[Any, Any]  # the raw stream fields: a dead letter keeps the whole message
    withdrawal: tuple[str, str, str] | None = None  # (message id, channel, reason)

    @property
    def undecodable(self) -> bool:
        return self.message is None and self.withdrawal is None


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
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.store = store
        self.batch = batch
        self.reclaim_idle_ms = reclaim_idle_ms
        self.name = name or consumer_name()
        self.partitions = sorted(set(range(keys.partitions) if partitions is None else partitions))
        if not self.partitions:
            raise ValueError("a persistence worker needs at least one partition")
        if not set(self.partitions) <= set(range(keys.partitions)):
            raise ValueError(f"partitions {self.partitions} are not all within 0-{keys.partitions - 1}")
        self.streams = [keys.ingest(p) for p in self.partitions]
        self.persisted = 0
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
                entries: list[Entry] = []
                if loop.time() >= next_reclaim:
                    entries = await self._reclaim(stream)
                    next_reclaim = loop.time() + RECLAIM_EVERY_S
                if not entries and own_pending:
                    entries = await self._read(stream, "0", block=None)
                    own_pending = bool(entries)
                if not entries:
                    entries = await self._read(stream, ">", block=None if burst else BLOCK_MS)
                if not entries:
                    if burst:
                        return
                    continue
                await self._persist(stream, entries)
                backoff = 0.1
            except (RedisError, OSError, TimeoutError) as exc:
                own_pending = True
                # A Redis restarted without persistence comes back without the groups.
                need_group = isinstance(exc, ResponseError) and "NOGROUP" in str(exc)
                log.warning("persistence of %s: %s; retrying in %.1fs", stream, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            except Exception:
                # Postgres errors and anything unforeseen: keep the entries pending, retry.
                own_pending = True
                log.exception("persistence of %s failed; retrying in %.1fs", stream, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _read(self, stream: str, start: str, *, block: int | None) -> list[Entry]:
        # One stream per command: one hash slot. redis-py types replies loosely:
        # [[stream, [(entry_id, {field: value})]]] or None.
        reply: Any = await self.redis.xreadgroup(
            CONSUMER_GROUP,
            self.name,
            {stream: start},
            count=self.batch,
            block=block,
        )
        return [
            _entry(stream, entry_id, fields)
            for _, items in (reply or [])
            for entry_id, fields in items
            if fields  # an entry deleted while pending comes back with no fields
        ]

    async def _reclaim(self, stream: str) -> list[Entry]:
        reply: Any = await self.redis.xautoclaim(
            stream,
            CONSUMER_GROUP,
            self.name,
            min_idle_time=self.reclaim_idle_ms,
            start_id="0-0",
            count=self.batch,
        )
        return [_entry(stream, entry_id, fields) for entry_id, fields in reply[1] if fields]

    async def _persist(self, stream: str, entries: list[Entry]) -> None:
        """Store a batch read from `stream`, then set aside and acknowledge it there."""
        messages = [e.message for e in entries if e.message is not None]
        try:
            refused = await self.store.insert(messages)
        except asyncpg.DataError:
            # One message PostgreSQL cannot store must not stop the partition: store the
            # batch one by one and set the bad ones aside.
            refused = await self._insert_one_by_one(messages)
        # After the inserts: a withdrawal follows its message in the stream.
        await self.store.withdraw([e.withdrawal for e in entries if e.withdrawal is not None])
        dead = [e for e in entries if e.undecodable or (e.message is not None and e.message.id in refused)]
        # One pipeline, one partition: the dead-letter stream carries the ingest stream's tag,
        # and a channel's `seq` and `epoch` carry its partition's tag, which is the stream's
        # (the publish script wrote the entry there).
        ids = [e.entry_id for e in entries]
        async with self.redis.pipeline(transaction=False) as pipe:
            for e in dead:
                pipe.xadd(self.keys.dead_letter(stream), {b"id": e.entry_id, **e.fields})
            for channel in {e.message.channel for e in dead if e.message is not None}:
                # Its sequence went back: drop it so that the next publish re-seeds it above
                # what Postgres holds, under a new epoch (clients reload).
                ck = self.keys.channel(Channel.parse(channel))
                pipe.delete(ck.seq, ck.epoch)
            pipe.xack(stream, CONSUMER_GROUP, *ids)
            pipe.xdel(stream, *ids)
            await pipe.execute()
        for e in dead:
            log.error(
                "persistence: ingest entry %s of %s set aside in %s (message %s in %s)",
                e.entry_id,
                e.stream,
                self.keys.dead_letter(e.stream),
                e.message.id if e.message else "undecodable",
                e.message.channel if e.message else "?",
            )
        self.persisted += len(messages) - len(refused)

    async def _insert_one_by_one(self, messages: list[Message]) -> set[str]:
        refused: set[str] = set()
        for message in messages:
            try:
                refused |= await self.store.insert([message])
            except asyncpg.DataError:
                log.exception("message %s in %s cannot be stored", message.id, message.channel)
                refused.add(message.id)
        return refused


def _entry(stream: bytes | str, entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    name = stream.decode() if isinstance(stream, bytes) else stream
    try:
        if b"w" in fields:
            withdrawal = (fields[b"w"].decode(), fields[b"c"].decode(), fields[b"r"].decode())
            return Entry(name, entry_id, None, fields, withdrawal)
        message = unpack_record(int(fields[b"s"]), fields[b"m"])
    except (KeyError, ValueError, TypeError):
        log.exception("ingest entry %s in %s cannot be decoded; dead-lettered", entry_id, name)
        return Entry(name, entry_id, None, fields)
    return Entry(name, entry_id, message, fields)
