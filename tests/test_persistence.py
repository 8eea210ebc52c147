"""The persistence worker on real servers: SIGKILL mid-batch, reclaim, poison messages, and
sequences that went back after a partial loss of Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from realtime.bus import Bus, Published
from realtime.channels import Channel
from realtime.keys import CONSUMER_GROUP, Keys
from realtime.message_store import MessageStore
from realtime.messages import Author, unpack_record
from realtime.settings import Settings
from tests.conftest import wait_for
from workers.persistence import PersistenceWorker

MESSAGES = 3000
STAFF = Author(1, "Staff")


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.redis_prefix, settings.partitions)


@pytest.fixture
def bus(settings: Settings, redis: Redis, pool: asyncpg.Pool, keys: Keys) -> Bus:
    return Bus(redis, keys, MessageStore(pool), history_maxlen=settings.history_maxlen)


@pytest.fixture
def worker(settings: Settings, redis: Redis, pool: asyncpg.Pool) -> PersistenceWorker:
    return PersistenceWorker.configured(settings, redis, pool)


async def say(bus: Bus, channel: str, text: str, msg_id: str) -> Published:
    return await bus.publish(Channel.parse(channel), STAFF, {"kind": "text", "text": text}, msg_id)


@asynccontextmanager
async def worker_process(settings: Settings) -> AsyncIterator[asyncio.subprocess.Process]:
    assert settings.database_url is not None
    assert settings.redis_url is not None
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "PROCRECHE_REDIS_PREFIX": settings.redis_prefix,
        "PROCRECHE_WORKER_BATCH": "50",
        "PROCRECHE_RECLAIM_IDLE_MS": str(settings.reclaim_idle_ms),
        "PROCRECHE_DATA": str(settings.data_dir),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "worker",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_sigkill_mid_batch_loses_and_duplicates_nothing(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, keys: Keys, bus: Bus
) -> None:
    acked = {uuid.UUID((await say(bus, f"family:{n % 8 + 1}", f"m{n}", f"msg-{n:08d}")).id) for n in range(MESSAGES)}

    async def persisted() -> int:
        return int(await pool.fetchval("SELECT count(*) FROM messages"))

    # Kill it three times, each as soon as it has committed more, well before it is done.
    for _ in range(3):
        before = await persisted()
        async with worker_process(settings) as worker:
            await wait_for(lambda floor=before: _more_than(persisted, floor), interval=0.005)
            worker.send_signal(signal.SIGKILL)
    assert await persisted() < MESSAGES

    async def ingest_left() -> int:
        return sum([await redis.xlen(stream) for stream in keys.all_ingest()])

    async with worker_process(settings):
        await wait_for(lambda: _more_than(persisted, MESSAGES - 1), timeout=60)
        # Acknowledged and removed from the ingest streams once committed.
        await wait_for(lambda: _equals(ingest_left, 0))
    rows = await pool.fetch("SELECT id, channel, seq FROM messages")
    assert {r["id"] for r in rows} == acked
    assert len(rows) == MESSAGES
    per_channel: dict[str, list[int]] = {}
    for r in rows:
        per_channel.setdefault(r["channel"], []).append(r["seq"])
    assert all(sorted(seqs) == list(range(1, len(seqs) + 1)) for seqs in per_channel.values())


async def test_a_dead_consumers_pending_entries_are_reclaimed(
    redis: Redis, pool: asyncpg.Pool, keys: Keys, bus: Bus
) -> None:
    ids = {uuid.UUID((await say(bus, "family:1", f"m{n}", f"m-{n:06d}")).id) for n in range(10)}
    stream = keys.channel(Channel.parse("family:1")).ingest
    dead = PersistenceWorker(redis, keys, MessageStore(pool), batch=100, reclaim_idle_ms=60_000, name="dead")
    await dead.ensure_groups()
    # The dead consumer read the entries and never acknowledged them.
    await redis.xreadgroup(CONSUMER_GROUP, "dead", {stream: ">"}, count=100)
    assert (await redis.xpending(stream, CONSUMER_GROUP))["pending"] == 10
    survivor = PersistenceWorker(redis, keys, MessageStore(pool), batch=100, reclaim_idle_ms=200, name="survivor")
    await survivor.run(burst=True)
    assert await pool.fetchval("SELECT count(*) FROM messages") == 0, "not idle long enough yet"
    await asyncio.sleep(0.3)
    await survivor.run(burst=True)
    assert {r["id"] for r in await pool.fetch("SELECT id FROM messages")} == ids
    assert (await redis.xpending(stream, CONSUMER_GROUP))["pending"] == 0


async def _more_than(read: Callable[[], Awaitable[int]], floor: int) -> bool:
    return await read() > floor


async def _equals(read: Callable[[], Awaitable[int]], value: int) -> bool:
    return await read() == value


async def test_a_message_postgres_refuses_is_set_aside_and_the_rest_is_stored(
    redis: Redis, pool: asyncpg.Pool, keys: Keys, bus: Bus, worker: PersistenceWorker
) -> None:
    good = [(await say(bus, "family:1", f"ok {n}", f"good-{n:04d}")).id for n in range(5)]
    # Bypasses the gateway's validation: jsonb cannot hold U+0000.
    await say(bus, "family:1", "nul \x00 byte", "poison-0001")
    good.append((await say(bus, "family:1", "after", "good-9999")).id)
    await worker.run(burst=True)
    assert {str(r["id"]) for r in await pool.fetch("SELECT id FROM messages")} == set(good)
    stream = keys.channel(Channel.parse("family:1")).ingest
    dead: Any = await redis.xrange(keys.dead_letter(stream))
    assert len(dead) == 1
    # The dead letter keeps the whole message for the operator.
    fields = dead[0][1]
    assert unpack_record(int(fields[b"s"]), fields[b"m"]).body["text"] == "nul \x00 byte"
    assert await redis.xlen(stream) == 0


async def test_a_sequence_that_went_back_is_reseeded_under_a_new_epoch(
    redis: Redis, pool: asyncpg.Pool, keys: Keys, bus: Bus, worker: PersistenceWorker
) -> None:
    first = [await say(bus, "family:2", f"m{n}", f"first-{n:04d}") for n in range(3)]
    await worker.run(burst=True)
    # Redis came back from an older snapshot: its sequence and history are behind what
    # Postgres holds.
    ck = keys.channel(Channel.parse("family:2"))
    await redis.set(ck.seq, 1)
    await redis.delete(ck.history)
    clash = await say(bus, "family:2", "clash", "clash-0001")
    assert clash.seq == 2
    await worker.run(burst=True)
    after = await say(bus, "family:2", "after", "after-0001")
    assert after.seq == 4
    assert after.epoch != first[0].epoch
    await worker.run(burst=True)
    rows = await pool.fetch(
        "SELECT seq, body->>'text' AS text FROM messages WHERE channel = $1 ORDER BY seq", "family:2"
    )
    assert [(r["seq"], r["text"]) for r in rows] == [(1, "m0"), (2, "m1"), (3, "m2"), (4, "after")]
    assert await redis.xlen(keys.dead_letter(ck.ingest)) == 1


async def test_a_sequence_behind_the_history_moves_past_it(redis: Redis, keys: Keys, bus: Bus) -> None:
    first = [await say(bus, "family:3", f"m{n}", f"first-{n:04d}") for n in range(3)]
    ck = keys.channel(Channel.parse("family:3"))
    await redis.set(ck.seq, 1)
    after = await say(bus, "family:3", "after", "after-0001")
    assert after.seq == 4
    assert after.epoch != first[0].epoch
    assert await redis.xlen(ck.history) == 4
