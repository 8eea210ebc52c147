"""The persistence worker on real servers: SIGKILL mid-batch, reclaim, poison messages,
sequences that went back after a partial loss of Redis, workers sharing the partitions, one
hash slot per command, and `serve --no-worker`."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import asyncpg
import msgpack
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.crc import key_slot

from realtime.bus import Bus, Published
from realtime.channels import Channel
from realtime.keys import CONSUMER_GROUP, Keys
from realtime.message_store import MessageStore
from realtime.messages import Author, unpack_record
from realtime.settings import Settings, SettingsError, parse_partitions
from tests.conftest import rewind, wait_for
from tests.processes import GatewayProcess, cli_process, free_port, procreche_env, terminate
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
    env = procreche_env(
        settings,
        settings.data_dir,
        PROCRECHE_WORKER_BATCH="50",
        PROCRECHE_RECLAIM_IDLE_MS=str(settings.reclaim_idle_ms),
    )
    async with cli_process("worker", env=env) as process:
        yield process


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


async def test_entries_that_cannot_be_decoded_are_set_aside_and_the_rest_is_stored(
    redis: Redis, pool: asyncpg.Pool, keys: Keys, bus: Bus, worker: PersistenceWorker
) -> None:
    good = [(await say(bus, "family:1", f"ok {n}", f"good-{n:04d}")).id for n in range(3)]
    stream = keys.channel(Channel.parse("family:1")).ingest
    first: Any = await redis.xrange(stream, count=1)
    packed: bytes = first[0][1][b"m"]
    record = msgpack.unpackb(packed)
    bad: list[dict[Any, Any]] = [
        {b"s": b"9", b"m": b"\xc1"},  # not msgpack
        {b"s": b"nine", b"m": packed},  # not a sequence number
        {b"m": packed},  # no sequence number
        {b"s": b"9", b"m": msgpack.packb({k: v for k, v in record.items() if k != "ch"})},  # no channel
        {b"s": b"9", b"m": msgpack.packb(record | {"b": ["not", "a", "map"]})},
        {b"w": str(uuid.uuid4()).encode(), b"c": b"family:1"},  # a withdrawal without its reason
    ]
    bad_ids = [await redis.xadd(stream, entry) for entry in bad]
    good.append((await say(bus, "family:1", "after", "good-9999")).id)
    await worker.run(burst=True)
    assert await persisted_ids(pool) == set(good)
    assert worker.persisted == len(good)
    dead: Any = await redis.xrange(keys.dead_letter(stream))
    # Each with its entry id and all its fields, in stream order.
    assert [f for _, f in dead] == [{b"id": entry_id, **entry} for entry_id, entry in zip(bad_ids, bad, strict=True)]
    assert await redis.xlen(stream) == 0
    assert (await redis.xpending(stream, CONSUMER_GROUP))["pending"] == 0


async def test_a_message_whose_seq_went_back_is_renumbered_above_postgres_under_a_new_epoch(
    redis: Redis, pool: asyncpg.Pool, keys: Keys, bus: Bus, worker: PersistenceWorker
) -> None:
    first = [await say(bus, "family:2", f"m{n}", f"first-{n:04d}") for n in range(3)]
    await worker.run(burst=True)
    # Redis came back from an older state (a power cut): its sequence and history are
    # behind what Postgres holds; two messages are acknowledged under seqs Postgres has.
    ck = keys.channel(Channel.parse("family:2"))
    await rewind(redis, ck, 1)
    clashes = [await say(bus, "family:2", f"clash {n}", f"clash-{n:04d}") for n in range(2)]
    assert [c.seq for c in clashes] == [2, 3]
    assert clashes[0].epoch == first[0].epoch
    live = redis.pubsub()
    await live.subscribe(ck.live)
    try:
        await worker.run(burst=True)  # refused at 2 and 3: published again as 4 and 5
        await worker.run(burst=True)  # stored at 4 and 5
        told = [m async for m in _messages(live, 2)]
    finally:
        await live.aclose()  # type: ignore[no-untyped-call]
    after = await say(bus, "family:2", "after", "after-0001")
    assert after.seq == 6
    assert after.epoch != first[0].epoch
    assert told[1]["data"] == b"r " + after.epoch.encode()  # live subscribers are told at once
    await worker.run(burst=True)
    rows = await pool.fetch(
        "SELECT seq, body->>'text' AS text FROM messages WHERE channel = $1 ORDER BY seq", "family:2"
    )
    texts = ["m0", "m1", "m2", "clash 0", "clash 1", "after"]
    assert [(r["seq"], r["text"]) for r in rows] == list(enumerate(texts, start=1))
    assert {str(r["id"]) for r in await pool.fetch("SELECT id FROM messages")} >= {c.id for c in clashes}
    assert await redis.xlen(keys.dead_letter(ck.ingest)) == 0
    assert (worker.renumbered, worker.dead_lettered) == (2, 0)
    # The history no longer serves them under their void seqs; a resume reads the record.
    backlog = await bus.backlog(Channel.parse("family:2"), 0, 100)
    assert [(m.seq, m.body["text"]) for m in backlog.messages] == list(enumerate(texts, start=1))
    assert backlog.epoch == after.epoch
    # The publisher retrying its msg_id learns the new seq, not the void one.
    retried = await say(bus, "family:2", "clash 1", "clash-0001")
    assert (retried.seq, retried.id, retried.duplicate) == (5, clashes[1].id, True)


async def _messages(pubsub: Any, count: int) -> AsyncIterator[dict[str, Any]]:
    """The next `count` pub/sub messages (the subscription's confirmation first), bounded."""
    for _ in range(count):
        message = None
        async with asyncio.timeout(5):
            while message is None:
                message = await pubsub.get_message(timeout=1.0)
        yield message


async def test_a_sequence_behind_the_history_moves_past_it(redis: Redis, keys: Keys, bus: Bus) -> None:
    first = [await say(bus, "family:3", f"m{n}", f"first-{n:04d}") for n in range(3)]
    ck = keys.channel(Channel.parse("family:3"))
    await redis.set(ck.seq, 1)
    after = await say(bus, "family:3", "after", "after-0001")
    assert after.seq == 4
    assert after.epoch != first[0].epoch
    assert await redis.xlen(ck.history) == 4


def channels_in(partitions: set[int], count: int, settings: Settings) -> list[str]:
    """`count` household channels whose partitions are all in `partitions`."""
    found = (f"family:{n}" for n in range(1, 10_000))
    return [c for c in found if Channel.parse(c).partition(settings.partitions) in partitions][:count]


async def persisted_ids(pool: asyncpg.Pool) -> set[str]:
    return {str(r["id"]) for r in await pool.fetch("SELECT id FROM messages")}


def test_worker_partitions_are_parsed_from_the_environment() -> None:
    env = {"PROCRECHE_PARTITIONS": "8"}
    assert Settings.from_env(env).worker_partitions is None
    assert Settings.from_env(env | {"PROCRECHE_WORKER_PARTITIONS": " "}).worker_partitions is None
    chosen = Settings.from_env(env | {"PROCRECHE_WORKER_PARTITIONS": "0-3, 6,2"}).worker_partitions
    assert chosen == frozenset({0, 1, 2, 3, 6})
    assert parse_partitions("7", 8) == frozenset({7})
    assert parse_partitions("0-15", 16) == frozenset(range(16))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("zero", 'must list partitions and ranges like "0-3,6"'),
        ("0-3,", 'must list partitions and ranges like "0-3,6"'),
        ("-1", 'must list partitions and ranges like "0-3,6"'),
        ("0-3-5", 'must list partitions and ranges like "0-3,6"'),
        ("3-1", "'3-1' is not a range of partitions"),
        ("6-8", "names partition 8, but there are only 8 (0-7, PROCRECHE_PARTITIONS)"),
    ],
)
def test_bad_worker_partitions_are_a_clear_error(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match="PROCRECHE_WORKER_PARTITIONS") as caught:
        Settings.from_env({"PROCRECHE_PARTITIONS": "8", "PROCRECHE_WORKER_PARTITIONS": raw})
    assert message in str(caught.value)


def test_a_worker_refuses_partitions_that_do_not_exist(redis: Redis, pool: asyncpg.Pool, keys: Keys) -> None:
    store = MessageStore(pool)
    with pytest.raises(ValueError, match="at least one partition"):
        PersistenceWorker(redis, keys, store, batch=10, reclaim_idle_ms=1000, partitions=[])
    with pytest.raises(ValueError, match="within 0-7"):
        PersistenceWorker(redis, keys, store, batch=10, reclaim_idle_ms=1000, partitions=[7, 8])


async def test_a_worker_persists_only_its_partitions(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, keys: Keys, bus: Bus
) -> None:
    mine = channels_in({0, 1}, 4, settings)
    others = channels_in(set(range(2, settings.partitions)), 6, settings)
    assert {Channel.parse(c).partition(settings.partitions) for c in mine} == {0, 1}
    ours = {(await say(bus, c, f"{c} {n}", f"{c}-{n}")).id for c in mine for n in range(5)}
    theirs = {(await say(bus, c, f"{c} {n}", f"{c}-{n}")).id for c in others for n in range(5)}
    worker = PersistenceWorker.configured(settings_with(settings, {0, 1}), redis, pool)
    assert worker.streams == [keys.ingest(0), keys.ingest(1)]
    await worker.run(burst=True)
    assert await persisted_ids(pool) == ours
    assert worker.persisted == len(ours)
    for p in range(settings.partitions):
        stream = keys.ingest(p)
        if p in (0, 1):
            assert await redis.xlen(stream) == 0
            continue
        # Left for another worker: still in the stream (if any was published there), not
        # even read (pending) by this one, which created no group there.
        if await redis.exists(stream):
            assert await redis.xinfo_groups(stream) == [], f"partition {p} was touched"
    left = sum([await redis.xlen(keys.ingest(p)) for p in range(2, settings.partitions)])
    assert left == len(theirs)


async def test_two_workers_with_disjoint_partitions_persist_everything(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, keys: Keys, bus: Bus
) -> None:
    half = settings.partitions // 2
    low, high = set(range(half)), set(range(half, settings.partitions))
    a = PersistenceWorker.configured(settings_with(settings, low), redis, pool)
    b = PersistenceWorker.configured(settings_with(settings, high), redis, pool)
    runs = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    try:
        # Published while both run (blocked on their streams), on every partition.
        acked = {(await say(bus, f"family:{n % 40 + 1}", f"m{n}", f"two-{n:05d}")).id for n in range(400)}
        assert {Channel.parse(f"family:{n}").partition(settings.partitions) for n in range(1, 41)} == low | high

        async def all_persisted() -> bool:
            return await persisted_ids(pool) == acked

        await wait_for(all_persisted)
    finally:
        a.close()
        b.close()
        await asyncio.wait_for(asyncio.gather(*runs), 10)
    assert a.persisted > 0
    assert b.persisted > 0
    assert a.persisted + b.persisted == len(acked)
    for p in range(settings.partitions):
        consumers: Any = await redis.xinfo_consumers(keys.ingest(p), CONSUMER_GROUP)
        assert [c["name"].decode() for c in consumers] == [(a if p in low else b).name]
        assert await redis.xlen(keys.ingest(p)) == 0


async def test_every_command_and_pipeline_of_a_worker_touches_one_hash_slot(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, keys: Keys, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Redis Cluster requires (CROSSSLOT otherwise): a reclaim, reads on every partition,
    dead letters and a channel's sequence dropped after a conflict, all one slot at a time."""
    prefix = f"{settings.redis_prefix}:".encode()
    slots_seen: list[set[int]] = []

    def slots(commands: list[tuple[Any, ...]]) -> set[int]:
        # A script's keys are those it declares; its other arguments (a pub/sub channel
        # among them) are no keys.
        declared = [args[3 : 3 + int(args[2])] if args[0] in ("EVALSHA", "EVAL") else args for args in commands]
        names = [a if isinstance(a, bytes) else str(a).encode() for args in declared for a in args]
        return {key_slot(k) for k in names if k.startswith(prefix)}

    original_command: Any = redis.execute_command
    original_pipeline = Pipeline.execute

    async def command(*args: Any, **options: Any) -> Any:
        slots_seen.append(slots([args]))
        return await original_command(*args, **options)

    async def pipeline(self: Pipeline, raise_on_error: bool = True) -> Any:
        slots_seen.append(slots([args for args, _ in self.command_stack]))
        return await original_pipeline(self, raise_on_error)

    # A dead consumer's pending entries (reclaimed), a poison message (dead letter), a
    # sequence behind PostgreSQL (conflict: the message is renumbered in the channel's slot).
    for n in range(40):
        await say(bus, f"family:{n % 20 + 1}", f"m{n}", f"slot-{n:04d}")
    worker = PersistenceWorker.configured(settings, redis, pool)
    await worker.run(burst=True)
    await say(bus, "family:3", "nul \x00 byte", "poison-0001")
    ck = keys.channel(Channel.parse("family:4"))
    await redis.set(ck.seq, 1)
    await redis.delete(ck.history)
    await say(bus, "family:4", "clash", "clash-0001")
    await say(bus, "family:5", "left pending", "pending-0001")
    stream = keys.channel(Channel.parse("family:5")).ingest
    await redis.xreadgroup(CONSUMER_GROUP, "dead", {stream: ">"}, count=100)
    await asyncio.sleep(settings.reclaim_idle_ms / 1000 + 0.1)

    monkeypatch.setattr(redis, "execute_command", command)
    monkeypatch.setattr(Pipeline, "execute", pipeline)
    worker = PersistenceWorker.configured(settings, redis, pool)
    await worker.run(burst=True)
    monkeypatch.undo()

    assert await redis.xlen(keys.dead_letter(keys.channel(Channel.parse("family:3")).ingest)) == 1
    assert await redis.xlen(keys.dead_letter(ck.ingest)) == 0
    assert worker.renumbered == 1
    assert (await redis.xpending(stream, CONSUMER_GROUP))["pending"] == 0
    assert len(slots_seen) > 3 * settings.partitions
    assert all(len(s) == 1 for s in slots_seen), [s for s in slots_seen if len(s) != 1]


async def test_serve_without_worker_leaves_the_ingest_streams_alone(
    settings: Settings, redis: Redis, keys: Keys, bus: Bus
) -> None:
    published = await say(bus, "family:1", "for a worker elsewhere", "no-worker-0001")
    log = settings.data_dir / "serve.log"
    env = procreche_env(settings, settings.data_dir, PROCRECHE_DRAIN_GRACE="0")
    port = free_port()
    args = ("serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port))
    async with cli_process(*args, env=env, log=log) as process:
        gateway = GatewayProcess(process, port, log)
        await gateway.wait_healthy(60)
        assert await terminate(process) == 0, gateway.log_tail()
    out = log.read_text()
    assert "serving on" in out
    assert "persistence worker" not in out
    stream = keys.channel(Channel.parse("family:1")).ingest
    entries: Any = await redis.xrange(stream)
    assert [int(fields[b"s"]) for _, fields in entries] == [published.seq]
    assert await redis.xinfo_groups(stream) == []


def settings_with(settings: Settings, partitions: set[int]) -> Settings:
    return replace(settings, worker_partitions=frozenset(partitions))
