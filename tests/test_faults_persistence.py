"""Persistence under faults, on real processes and real servers (docs/reliability.md):

- a `procreche worker` SIGKILLed 20 times while 10,000 messages stream through: nothing
  acknowledged is lost or stored twice, each channel's seqs are consecutive, and the ingest
  streams are drained at the end;
- PostgreSQL stopped for 30 s under two gateways and a worker: connected clients keep
  publishing (acknowledged, delivered live; the ingest streams buffer), `/healthz` answers
  `200 degraded` meanwhile, and everything acknowledged is persisted once it is back.

The first test publishes through a `Bus`, the gateway's own publish path from the `PUBLISH`
script on (realtime/bus.py): the fault is the worker's, whose input is the ingest streams
whoever writes them, and 10,000 publishes through WebSocket clients would spend the two
cores of CI on JSON and frames instead of on killing and restarting workers. The second
test goes through real WebSocket clients and gateways, since what it checks is what a
client sees while PostgreSQL is away.

Every wait is bounded; every process and the private PostgreSQL are stopped on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import signal
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from realtime.bus import Bus
from realtime.channels import Channel
from realtime.client import Client
from realtime.keys import CONSUMER_GROUP, Keys
from realtime.message_store import MessageStore
from realtime.messages import Author
from realtime.settings import Settings
from tests.conftest import wait_for
from tests.figures import report
from tests.processes import (
    GatewayProcess,
    cli_process,
    gateway_process,
    login,
    private_postgres,
    procreche_env,
    terminate,
)

STAFF = Author(1, "Staff")
WAIT = 90.0


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.redis_prefix, settings.partitions)


async def ingest_left(redis: Redis, keys: Keys) -> int:
    """Entries still in the ingest streams (a persisted batch is XDELed)."""
    return sum([await redis.xlen(stream) for stream in keys.all_ingest()])


async def pending(redis: Redis, keys: Keys) -> int:
    """Entries read by a consumer and not acknowledged (what a killed worker leaves)."""
    total = 0
    for stream in keys.all_ingest():
        with contextlib.suppress(ResponseError):  # no group yet: nothing pending
            summary: Any = await redis.xpending(stream, CONSUMER_GROUP)
            total += int(summary["pending"])
    return total


async def dead_letters(redis: Redis, keys: Keys) -> int:
    return sum([await redis.xlen(keys.dead_letter(stream)) for stream in keys.all_ingest()])


def check_consecutive(rows: list[asyncpg.Record]) -> None:
    per_channel: dict[str, list[int]] = {}
    for r in rows:
        per_channel.setdefault(r["channel"], []).append(r["seq"])
    for channel, seqs in per_channel.items():
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), f"{channel}: seqs are not 1..{len(seqs)}"


# --- 1. A worker SIGKILLed 20 times under load --------------------------------------------

KILLS = 20
MESSAGES = 10_000
# Ten channels of five kinds, spread over the partitions (crc32 of the name).
CHANNELS = (
    "family:1",
    "family:2",
    "family:3",
    "family:4",
    "group:1",
    "group:2",
    "child:1",
    "child:2",
    "structure:1",
    "user:1",
)
SHARE = MESSAGES // (KILLS + 1)
PUBLISH_PAUSE = 0.03  # per publisher: ~330 messages/s in all, so publishing spans the kills


@pytest.mark.timeout(300)
async def test_a_worker_sigkilled_20_times_under_load_loses_and_duplicates_nothing(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, keys: Keys, tmp_path: Path
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    bus = Bus(redis, keys, MessageStore(pool), history_maxlen=settings.history_maxlen)
    env = procreche_env(
        settings,
        tmp_path,
        PROCRECHE_WORKER_BATCH="50",
        PROCRECHE_RECLAIM_IDLE_MS=str(settings.reclaim_idle_ms),
    )
    log = tmp_path / "worker.log"
    acked: dict[str, str] = {}  # message id -> its text, once its publish returned
    # Publishing is released in KILLS + 1 equal shares, one more at each kill, so that the
    # messages stream in all along: while a worker runs, and while none does.
    kills = 0
    issued = 0
    released = asyncio.Condition()

    def allowed() -> int:
        return (kills + 1) * MESSAGES // (KILLS + 1)

    def may_take() -> bool:
        return issued >= MESSAGES or issued < allowed()

    async def publisher(channel: Channel) -> None:
        nonlocal issued
        while True:
            async with released:
                await released.wait_for(may_take)
                if issued >= MESSAGES:
                    return
                n, issued = issued, issued + 1
            text = f"m{n}"
            published = await bus.publish(channel, STAFF, {"kind": "text", "text": text}, f"k-{n}")
            acked[published.id] = text
            await asyncio.sleep(PUBLISH_PAUSE)

    async def persisted() -> int:
        return int(await pool.fetchval("SELECT count(*) FROM messages"))

    def worker_log() -> str:
        return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"

    kills_with_pending = 0
    async with asyncio.TaskGroup() as publishers:
        for name in CHANNELS:
            publishers.create_task(publisher(Channel.parse(name)))
        for _ in range(KILLS):
            before = await persisted()
            async with cli_process("worker", env=env, log=log) as worker:
                # Killed at a random moment soon after its first commit, while it works
                # through what accumulated since the last kill, once half of this share
                # has been published (publishing and killing stay in step).
                await wait_for(lambda floor=before: _more_than(persisted, floor), timeout=WAIT, interval=0.005)
                await wait_for(_now(lambda: len(acked) >= allowed() - SHARE // 2), timeout=WAIT)
                await asyncio.sleep(random.uniform(0, 0.1))
                assert worker.returncode is None, f"the worker exited by itself:\n{worker_log()}"
                worker.send_signal(signal.SIGKILL)
                assert await asyncio.wait_for(worker.wait(), WAIT) == -signal.SIGKILL
            if await pending(redis, keys):
                kills_with_pending += 1
            async with released:
                kills += 1
                released.notify_all()
    assert len(acked) == MESSAGES
    backlog = await ingest_left(redis, keys)  # what the last worker finds

    async with cli_process("worker", env=env, log=log) as worker:
        await wait_for(lambda: _more_than(persisted, MESSAGES - 1), timeout=WAIT)
        await wait_for(lambda: _equals(ingest_left(redis, keys), 0), timeout=WAIT)
        await wait_for(lambda: _equals(pending(redis, keys), 0), timeout=WAIT)
        assert await terminate(worker) == 0, worker_log()

    rows = await pool.fetch("SELECT id, channel, seq, body->>'text' AS text FROM messages")
    stored = {str(r["id"]): r["text"] for r in rows}
    lost = len(set(acked) - set(stored))
    duplicated = len(rows) - len({r["text"] for r in rows})
    assert lost == 0, f"{lost} acknowledged messages are not in PostgreSQL"
    assert duplicated == 0, f"{duplicated} messages are stored twice"
    assert stored == acked, "PostgreSQL holds messages that were never acknowledged"
    check_consecutive(rows)
    assert await dead_letters(redis, keys) == 0
    report(
        "Worker SIGKILLed under load",
        messages=MESSAGES,
        channels=len(CHANNELS),
        kills=KILLS,
        kills_leaving_entries_pending=kills_with_pending,
        backlog_for_last_worker=backlog,
        lost=lost,
        duplicated=duplicated,
        seconds=round(loop.time() - started, 1),
    )


# --- 2. PostgreSQL stopped for 30 s -----------------------------------------------------------

OUTAGE_S = 30.0
PUBLISH_INTERVAL = 0.05  # per publisher
DEGRADED = {"status": "degraded", "down": ["postgres"]}


async def health(gateway: GatewayProcess) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=gateway.base, timeout=10) as http:
        response = await http.get("/healthz")
        return response.status_code, response.json()


@pytest.mark.timeout(300)
async def test_postgres_stopped_for_30_s_publishing_goes_on_and_everything_is_persisted_after(
    settings: Settings, redis: Redis, keys: Keys, tmp_path: Path
) -> None:
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        postgres = await stack.enter_async_context(private_postgres(tmp_path / "postgres"))
        env = procreche_env(
            replace(settings, database_url=postgres.url),
            tmp_path / "data",
            PROCRECHE_RECLAIM_IDLE_MS="500",
            PROCRECHE_RATE_PER_SECOND="1000",
            PROCRECHE_RATE_BURST="1000",
        )
        a = await stack.enter_async_context(
            gateway_process(env, demo=True, options=["--no-worker"], log=tmp_path / "a.log")
        )
        b = await stack.enter_async_context(gateway_process(env, options=["--no-worker"], log=tmp_path / "b.log"))
        worker = await stack.enter_async_context(cli_process("worker", env=env, log=tmp_path / "worker.log"))
        gateways = (a, b)

        def logs() -> str:
            worker_log = (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
            return f"A:\n{a.log_tail()}\nB:\n{b.log_tail()}\nworker:\n{worker_log}\npostgres:\n{postgres.log_tail()}"

        async with httpx.AsyncClient(base_url=a.base, timeout=10) as http:
            tokens = {
                email: await login(http, email) for email in ("staff@demo.test", "martin@demo.test", "admin@demo.test")
            }
            me = (await http.get("/api/me", headers={"Authorization": f"Bearer {tokens['martin@demo.test']}"})).json()
            staff_me = (
                await http.get("/api/me", headers={"Authorization": f"Bearer {tokens['staff@demo.test']}"})
            ).json()
        household = next(c["channel"] for c in me["channels"] if c["channel"].startswith("family:"))
        staff_channels = [
            c["channel"] for c in staff_me["channels"] if c["channel"].split(":")[0] in ("family", "structure", "group")
        ]
        assert household in staff_channels
        # Publishers: staff on A over every household, group and structure channel; a
        # guardian on B in their household. The admin, on B, follows them all.
        staff = await stack.enter_async_context(Client.connect(a.ws, tokens["staff@demo.test"]))
        martin = await stack.enter_async_context(Client.connect(b.ws, tokens["martin@demo.test"]))
        admin = await stack.enter_async_context(Client.connect(b.ws, tokens["admin@demo.test"]))
        for channel in staff_channels:
            await staff.subscribe(channel, since=0)
            await admin.subscribe(channel, since=0)
        await martin.subscribe(household, since=0)

        acked: list[dict[str, Any]] = []
        outage = asyncio.Event()  # set while PostgreSQL is stopped
        stop = asyncio.Event()
        during_outage = {"published": 0, "acked": 0}

        async def keep_publishing(client: Client, channels: list[str], who: str) -> None:
            for n in itertools.count():
                if stop.is_set():
                    return
                channel = channels[n % len(channels)]
                down = outage.is_set()
                if down:
                    during_outage["published"] += 1
                # Any error fails the test: publishing must not need PostgreSQL.
                reply = await client.publish(channel, f"{who} {n}", msg_id=f"{who}-{n:08d}")
                acked.append(
                    {"channel": reply["channel"], "seq": reply["seq"], "id": reply["id"], "text": f"{who} {n}"}
                )
                if down:
                    during_outage["acked"] += 1
                await asyncio.sleep(PUBLISH_INTERVAL)

        async def persisted_ids() -> set[str]:
            conn = await asyncpg.connect(postgres.url)
            try:
                return {str(r["id"]) for r in await conn.fetch("SELECT id FROM messages")}
            finally:
                await conn.close()

        async def all_persisted() -> bool:
            return await persisted_ids() >= {m["id"] for m in acked} and await ingest_left(redis, keys) == 0

        async with asyncio.TaskGroup() as publishers:
            publishers.create_task(keep_publishing(staff, staff_channels, "staff"))
            publishers.create_task(keep_publishing(martin, [household], "martin"))
            try:
                # Before: published and persisted as usual.
                await wait_for(_now(lambda: len(acked) >= 40), timeout=WAIT)
                await wait_for(all_persisted, timeout=WAIT)

                await postgres.stop()
                outage.set()
                stopped_at = loop.time()
                for gateway in gateways:
                    assert await health(gateway) == (200, DEGRADED), logs()
                while (left := OUTAGE_S - (loop.time() - stopped_at)) > 0:
                    await asyncio.sleep(min(5.0, left))
                    for gateway in gateways:
                        assert await health(gateway) == (200, DEGRADED), logs()
                    assert worker.returncode is None, f"the worker died without PostgreSQL:\n{logs()}"
                stop.set()
            except BaseException:
                stop.set()
                raise
        outage_s = loop.time() - stopped_at
        outage.clear()
        assert during_outage["acked"] == during_outage["published"] > 0
        # What the workers could not persist, all in the ingest streams: what they owe now.
        backlog = await ingest_left(redis, keys)
        assert backlog >= during_outage["acked"]

        # Live delivery went on without PostgreSQL: the admin, on the other gateway, got
        # every message, once, in order, before PostgreSQL is back.
        expected = {m["id"]: m for m in acked}
        received: dict[str, dict[str, Any]] = {}
        last_seq: dict[str, int] = {}

        async def delivered() -> bool:
            while not admin.pushes.empty():
                frame = admin.pushes.get_nowait()
                if frame.get("op") == "message":
                    assert frame["id"] not in received, f"delivered twice: {frame}"
                    assert frame["seq"] > last_seq.get(frame["channel"], 0), f"out of order: {frame}"
                    received[frame["id"]] = frame
                    last_seq[frame["channel"]] = frame["seq"]
            return len(received) >= len(expected)

        await wait_for(delivered, timeout=WAIT)
        assert set(received) == set(expected)
        for mid, frame in received.items():
            assert (frame["channel"], frame["seq"], frame["body"]["text"]) == (
                expected[mid]["channel"],
                expected[mid]["seq"],
                expected[mid]["text"],
            )

        await postgres.start()
        restarted_at = loop.time()
        await wait_for(all_persisted, timeout=WAIT, interval=0.1)
        persist_s = loop.time() - restarted_at
        for gateway in gateways:
            await wait_for(lambda g=gateway: _healthy(g), timeout=WAIT, interval=0.2)
        assert worker.returncode is None, f"the worker died:\n{logs()}"
        for gateway in gateways:
            assert gateway.process.returncode is None, logs()

        # Everything acknowledged is in PostgreSQL exactly once, consecutive per channel.
        conn = await asyncpg.connect(postgres.url)
        try:
            rows = await conn.fetch("SELECT id, channel, seq, body->>'text' AS text FROM messages")
        finally:
            await conn.close()
        assert {str(r["id"]) for r in rows} == set(expected)
        assert len(rows) == len({r["text"] for r in rows}) == len(acked)
        check_consecutive(rows)
        assert await dead_letters(redis, keys) == 0
        assert await pending(redis, keys) == 0

        # The gateways use PostgreSQL again: a new login works.
        async with httpx.AsyncClient(base_url=b.base, timeout=10) as http:
            await login(http, "bernard@demo.test")
        assert await terminate(worker) == 0, logs()

    report(
        "PostgreSQL stopped under load",
        outage_seconds=round(outage_s, 1),
        published_before_outage=len(acked) - during_outage["acked"],
        published_during_outage=during_outage["published"],
        acked_during_outage=during_outage["acked"],
        persisted_after_recovery=backlog,
        seconds_to_persist_after_recovery=round(persist_s, 1),
        delivered_live=len(received),
        lost=0,
        duplicated=0,
    )


async def _healthy(gateway: GatewayProcess) -> bool:
    return await health(gateway) == (200, {"status": "ok"})


async def _more_than(read: Callable[[], Awaitable[int]], floor: int) -> bool:
    return await read() > floor


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


def _now(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """A plain condition as the async predicate `wait_for` polls."""

    async def check() -> bool:
        return predicate()

    return check
