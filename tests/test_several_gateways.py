"""Several gateways on one Redis and one PostgreSQL, as real processes (issue 5, item 7).

Topology: two `procreche serve` processes, A and B, on the test's Redis (its own key
prefix) and PostgreSQL. `serve` runs a gateway *and* a persistence worker in one process,
so this is two gateways and two workers sharing the ingest consumer group. We do not use
`serve --no-worker` plus two `procreche worker` processes: killing A would then not take a
worker down with it. Here it does: the SIGKILL of A also kills a worker that may
hold ingest entries it read but never acknowledged, which B's worker must reclaim
(`PROCRECHE_RECLAIM_IDLE_MS` is lowered to 500 ms so that this happens within the test).
The demo is seeded once, by `serve --demo` on A.

The scenario, on the Martin household channel (found through /api/me):

1. a guardian (martin@demo.test) subscribed on A receives, live and one by one, what staff
   (staff@demo.test) publish on B;
2. staff keep publishing on B; A is killed with SIGKILL; more is published while the
   guardian is disconnected; the guardian reconnects to B with `since` = the last seq it
   processed, and publishing goes on after the switch: the seqs and ids the guardian
   processed, over both connections, are exactly those acknowledged to staff, in order,
   with no gap and no duplicate;
3. the ids persisted in PostgreSQL are exactly the ids acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from realtime.client import Client
from realtime.settings import Settings
from tests.processes import gateway_process, login, procreche_env

LIVE_ONE_BY_ONE = 5
PUBLISH_INTERVAL = 0.01
# Messages published while the guardian is away, and then after it resumed on B.
WHILE_AWAY = 15
AFTER_RESUME = 15
WAIT = 20.0


def messages(client: Client) -> list[dict[str, Any]]:
    """The message pushes the client has received and not yet taken (other pushes dropped)."""
    taken: list[dict[str, Any]] = []
    while not client.pushes.empty():
        frame = client.pushes.get_nowait()
        if frame.get("op") == "message":
            taken.append(frame)
    return taken


async def next_message(client: Client) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        frame = await client.next_push(timeout=max(0.0, deadline - loop.time()))
        if frame.get("op") == "message":
            return frame


async def until(predicate: Callable[[], bool], publisher: asyncio.Task[None], timeout: float = WAIT) -> None:
    """Wait (bounded) for a condition the publisher makes true; its failure is raised at once."""
    async with asyncio.timeout(timeout):
        while not predicate():
            if publisher.done():
                await publisher
                raise AssertionError("the publisher stopped before the condition was met")
            await asyncio.sleep(0.01)


def seqs_and_ids(frames: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(f["seq"], f["id"]) for f in frames]


async def test_two_gateways_live_failover_resume_and_persistence(settings: Settings, tmp_path: Path) -> None:
    env = procreche_env(
        settings,
        tmp_path,
        PROCRECHE_RECLAIM_IDLE_MS="500",
        PROCRECHE_DRAIN_GRACE="1",
        PROCRECHE_RATE_PER_SECOND="1000",
        PROCRECHE_RATE_BURST="1000",
    )
    acked: list[dict[str, Any]] = []
    received: list[dict[str, Any]] = []
    stop_publishing = asyncio.Event()
    publisher: asyncio.Task[None] | None = None
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(gateway_process(env, demo=True, log=tmp_path / "a.log"))
        b = await stack.enter_async_context(gateway_process(env, log=tmp_path / "b.log"))
        try:
            async with httpx.AsyncClient(base_url=b.base, timeout=10) as http:
                staff_token = await login(http, "staff@demo.test")
                martin_token = await login(http, "martin@demo.test")
                me = (await http.get("/api/me", headers={"Authorization": f"Bearer {martin_token}"})).json()
            household = next(c["channel"] for c in me["channels"] if c["channel"].startswith("family:"))
            staff = await stack.enter_async_context(Client.connect(b.ws, staff_token))
            numbers = itertools.count(1)

            async def say() -> dict[str, Any]:
                reply = await staff.publish(household, f"message {next(numbers)}")
                acked.append(reply)
                return reply

            async def keep_publishing() -> None:
                while not stop_publishing.is_set():
                    await say()
                    await asyncio.sleep(PUBLISH_INTERVAL)

            # 1. Live across gateways: published on B, delivered on A.
            async with Client.connect(a.ws, martin_token) as martin:
                subscribed = await martin.subscribe(household, since=0)
                assert (subscribed["seq"], subscribed["recovered"]) == (0, True)
                epoch = subscribed["epoch"]
                for _ in range(LIVE_ONE_BY_ONE):
                    reply = await say()
                    pushed = await next_message(martin)
                    assert (pushed["seq"], pushed["id"], pushed["channel"]) == (reply["seq"], reply["id"], household)
                    assert pushed["body"]["text"] == f"message {len(acked)}"
                    received.append(pushed)

                # 2. A dies while staff keep publishing on B.
                publisher = asyncio.create_task(keep_publishing())
                await until(lambda: len(acked) >= LIVE_ONE_BY_ONE + 10, publisher)
                a.kill()
                assert await asyncio.wait_for(a.process.wait(), WAIT) == -9
                async with asyncio.timeout(WAIT):
                    await martin.ws.wait_closed()
                # What it received before the connection dropped is processed; the rest is
                # what the resume must bring.
                received += messages(martin)
            last_seq = received[-1]["seq"]
            assert publisher is not None
            await until(lambda: len(acked) >= last_seq + WHILE_AWAY, publisher)

            async with Client.connect(b.ws, martin_token) as martin:
                resumed = await martin.subscribe(household, since=last_seq)
                assert (resumed["epoch"], resumed["recovered"]) == (epoch, True)
                head = resumed["seq"]
                assert head >= last_seq + WHILE_AWAY
                await until(lambda: len(acked) >= head + AFTER_RESUME, publisher)
                stop_publishing.set()
                await asyncio.wait_for(publisher, WAIT)
                final = acked[-1]["seq"]
                while not received or received[-1]["seq"] < final:
                    received.append(await next_message(martin))
                # Anything more (a duplicate, say) would arrive now.
                await asyncio.sleep(0.3)
                received += messages(martin)

            assert [r["seq"] for r in acked] == list(range(1, len(acked) + 1))
            assert seqs_and_ids(received) == seqs_and_ids(acked)
            assert [f["body"]["text"] for f in received] == [f"message {n}" for n in range(1, len(acked) + 1)]

            # 3. Everything acknowledged is persisted, and nothing else.
            acked_ids = {r["id"] for r in acked}
            assert settings.database_url is not None
            conn = await asyncpg.connect(settings.database_url)
            try:

                async def persisted() -> dict[str, tuple[str, int]]:
                    rows = await conn.fetch("SELECT id, channel, seq FROM messages")
                    return {str(r["id"]): (r["channel"], r["seq"]) for r in rows}

                loop = asyncio.get_running_loop()
                deadline = loop.time() + WAIT
                rows = await persisted()
                while set(rows) != acked_ids and loop.time() < deadline:
                    await asyncio.sleep(0.1)
                    rows = await persisted()
            finally:
                await conn.close()
            assert set(rows) == acked_ids, (
                f"missing {sorted(acked_ids - set(rows))}, unexpected {sorted(set(rows) - acked_ids)}"
            )
            assert {rows[r["id"]] for r in acked} == {(household, r["seq"]) for r in acked}
        finally:
            stop_publishing.set()
            if publisher is not None:
                publisher.cancel()
                await asyncio.wait([publisher], timeout=WAIT)
                if publisher.done() and not publisher.cancelled():
                    # Retrieved; a failure of the test itself is reported by the body.
                    publisher.exception()
