"""The persistence worker: ingest streams → Postgres, acknowledged only after commit.

Reads every partition's ingest stream through the consumer group `persist`, inserts each
batch idempotently, then XACKs and XDELs it. Entries a dead worker left pending are
reclaimed with XAUTOCLAIM once idle for `reclaim_idle_ms`. A SIGKILL at any point loses
nothing (unacknowledged entries stay pending) and duplicates nothing (the insert is
idempotent on the message id and on (channel, seq)).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
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
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.store = store
        self.batch = batch
        self.reclaim_idle_ms = reclaim_idle_ms
        self.name = name or consumer_name()
        self.streams = keys.all_ingest()
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
        )

    def close(self) -> None:
        """Finish the batch in hand, then return from `run`."""
        self._stopping.set()

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def run(self, *, burst: bool = False) -> None:
        """Persist until `close()`; with burst=True, until nothing is left to persist."""
        backoff = 0.1
        own_pending = True  # after a start or a failure, our own pending entries come first
        next_reclaim = 0.0
        loop = asyncio.get_running_loop()
        need_groups = True
        while not self._stopping.is_set():
            try:
                if need_groups:
                    await self.ensure_groups()
                    need_groups = False
                entries: list[Entry] = []
                if loop.time() >= next_reclaim:
                    entries = await self._reclaim()
                    next_reclaim = loop.time() + RECLAIM_EVERY_S
                if not entries and own_pending:
                    entries = await self._read("0", block=None)
                    own_pending = bool(entries)
                if not entries:
                    entries = await self._read(">", block=None if burst else BLOCK_MS)
                if not entries:
                    if burst:
                        return
                    continue
                await self._persist(entries)
                backoff = 0.1
            except (RedisError, OSError, TimeoutError) as exc:
                own_pending = True
                # A Redis restarted without persistence comes back without the groups.
                need_groups = isinstance(exc, ResponseError) and "NOGROUP" in str(exc)
                log.warning("persistence: %s; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            except Exception:
                # Postgres errors and anything unforeseen: keep the entries pending, retry.
                own_pending = True
                log.exception("persistence failed; retrying in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _read(self, start: str, *, block: int | None) -> list[Entry]:
        # redis-py types replies loosely: [[stream, [(entry_id, {field: value})]]] or None.
        reply: Any = await self.redis.xreadgroup(
            CONSUMER_GROUP,
            self.name,
            dict.fromkeys(self.streams, start),
            count=self.batch,
            block=block,
        )
        return [
            _entry(stream, entry_id, fields)
            for stream, items in (reply or [])
            for entry_id, fields in items
            if fields  # an entry deleted while pending comes back with no fields
        ]

    async def _reclaim(self) -> list[Entry]:
        entries: list[Entry] = []
        for stream in self.streams:
            reply: Any = await self.redis.xautoclaim(
                stream,
                CONSUMER_GROUP,
                self.name,
                min_idle_time=self.reclaim_idle_ms,
                start_id="0-0",
                count=self.batch,
            )
            entries.extend(_entry(stream, entry_id, fields) for entry_id, fields in reply[1] if fields)
        return entries

    async def _persist(self, entries: list[Entry]) -> None:
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
        async with self.redis.pipeline(transaction=False) as pipe:
            for e in dead:
                pipe.xadd(self.keys.dead_letter(e.stream), {b"id": e.entry_id, **e.fields})
            for channel in {e.message.channel for e in dead if e.message is not None}:
                # Its sequence went back: drop it so that the next publish re-seeds it above
                # what Postgres holds, under a new epoch (clients reload).
                ck = self.keys.channel(Channel.parse(channel))
                pipe.delete(ck.seq, ck.epoch)
            for stream in {e.stream for e in entries}:
                ids = [e.entry_id for e in entries if e.stream == stream]
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
