"""What an idle WebSocket connection costs the gateway: no task, no timer of its own, no
handshake state kept, one keepalive timer for all the connections of a server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.wsproto import FanoutWebSocketProtocol, Keepalive
from realtime.client import Client
from realtime.errors import CloseCode
from realtime.settings import Settings
from tests.conftest import Gateway, running_gateway, wait_for
from tests.processes import gateway_process, login, procreche_env
from tests.raw_ws import masked_text_frame, open_raw


def protocol_tasks() -> list[asyncio.Task[object]]:
    """The tasks the WebSocket protocol runs: handshakes (the ASGI app), sessions' pumps."""
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "").startswith("FanoutWebSocketProtocol.")
    ]


async def no_protocol_task() -> bool:
    return not protocol_tasks()


@contextlib.asynccontextmanager
async def subscribed_clients(gateway: Gateway, channel: str, count: int) -> AsyncIterator[list[Client]]:
    """`count` connections of one user, authenticated and subscribed to `channel`, idle."""
    token = await gateway.login("martin@demo.test")
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for _ in range(count):
            client = await stack.enter_async_context(Client.connect(gateway.ws, token))
            await client.subscribe(channel)
            clients.append(client)
        # The subscribe reply comes before the presence announcement: let that end too.
        await wait_for(no_protocol_task)
        yield clients


async def test_an_idle_connection_holds_no_task_and_no_handshake_state(
    gateway: Gateway, demo_families: dict[str, int]
) -> None:
    household = f"family:{demo_families['Famille Martin']}"
    async with subscribed_clients(gateway, household, 3) as clients:
        sessions = gateway.services.sessions.all()
        assert len(sessions) == 3
        for session in sessions:
            sink = session.sink  # type: ignore[attr-defined]
            assert isinstance(sink, FanoutWebSocketProtocol)
            assert sink.pump is not None  # detached: the protocol runs the session's pump
            assert (sink.task, sink.events, sink.waiter) == (None, None, None)
            assert (sink.scope, sink.response, sink.initial_response) == (None, None, None)
            assert sink.ka_slot is not None  # waiting for its next ping
        # Idle, a session answers at once.
        replies = await asyncio.gather(*(c.request("presence", channel=household) for c in clients))
        assert all(reply["ok"] for reply in replies)
        await wait_for(no_protocol_task)

    async def all_gone() -> bool:
        return not gateway.services.sessions.all() and gateway.services.hub.subscriber_count(household) == 0

    await wait_for(all_gone)


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the gateway's VmRSS in /proc")
async def test_an_idle_connection_costs_the_gateway_a_few_kilobytes(settings: Settings, tmp_path: Path) -> None:
    """Resident memory of a `procreche serve` process per authenticated, subscribed, idle
    connection. It was 21–30 KiB with uvicorn's protocol and a task per connection, ~7 KiB
    now (measured with 1,000 and 5,000 connections). The bound leaves room for the
    allocator's noise at this small count."""
    count = 300
    env = procreche_env(settings, tmp_path)
    async with gateway_process(env, demo=True, options=("--no-worker",), log=tmp_path / "serve.log") as gw:
        async with httpx.AsyncClient(base_url=gw.base, timeout=10) as http:
            token = await login(http, "martin@demo.test")
            me = (await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})).json()
        household = next(c["channel"] for c in me["channels"] if c["channel"].startswith("family:"))
        opening = asyncio.Semaphore(10)

        async def open_idle(stack: contextlib.AsyncExitStack) -> None:
            async with opening:
                client = await stack.enter_async_context(Client.connect(gw.ws, token))
                await client.subscribe(household)

        async with contextlib.AsyncExitStack() as stack:
            await asyncio.gather(*(open_idle(stack) for _ in range(50)))  # warm up
        await asyncio.sleep(1)
        before = resident_bytes(gw.process.pid)
        async with contextlib.AsyncExitStack() as stack:
            await asyncio.gather(*(open_idle(stack) for _ in range(count)))
            await asyncio.sleep(1)  # the presence announcements that follow the replies
            after = resident_bytes(gw.process.pid)
    per_connection = (after - before) / count
    assert per_connection < 14 * 1024, f"{per_connection:.0f} bytes per idle connection"


class FakeConnection:
    """A connection as the Keepalive sees it; answers each ping at once if `answers`."""

    def __init__(self, keepalive: Keepalive, answers: bool) -> None:
        self.ka_slot: int | None = None
        self.keepalive = keepalive
        self.answers = answers
        self.awaiting_pong = False
        self.pings: list[float] = []
        self.late: list[float] = []

    def keepalive_due(self) -> bool:
        loop = asyncio.get_running_loop()
        if self.awaiting_pong:
            self.late.append(loop.time())
            return False
        self.pings.append(loop.time())
        self.awaiting_pong = True
        if self.answers:
            loop.call_soon(self.pong)
        return True

    def pong(self) -> None:
        self.awaiting_pong = False
        self.keepalive.answered(self)


async def test_one_keepalive_timer_pings_every_interval_and_finds_late_pongs() -> None:
    loop = asyncio.get_running_loop()
    keepalive = Keepalive(loop, interval=0.2, timeout=0.3)
    tick = keepalive.tick
    answering, silent, forgotten = (FakeConnection(keepalive, answers) for answers in (True, False, True))
    started = loop.time()
    for connection in (answering, silent, forgotten):
        keepalive.start(connection)
    keepalive.forget(forgotten)
    assert len(keepalive) == 2

    async def pinged_five_times() -> bool:
        return len(answering.pings) >= 5

    await wait_for(pinged_five_times, timeout=10)
    keepalive.forget(answering)
    assert len(keepalive) == 0
    assert forgotten.pings == []
    # The first ping an interval after the start (rounded up to the tick), the next ones an
    # interval after the previous one.
    assert 0.2 <= answering.pings[0] - started <= 0.2 + tick + 0.1
    gaps = [b - a for a, b in zip(answering.pings, answering.pings[1:], strict=False)]
    assert all(0.2 - tick <= gap <= 0.2 + tick + 0.1 for gap in gaps), gaps
    # No pong: found late once, `timeout` after the ping; then it is no longer waited for.
    assert len(silent.pings) == 1
    assert len(silent.late) == 1
    assert 0.3 - tick <= silent.late[0] - silent.pings[0] <= 0.3 + tick + 0.1


async def test_pings_are_answered_and_a_silent_peer_is_closed(settings: Settings) -> None:
    # ping_timeout is idle - interval, at least 1 s (gateway.cli.uvicorn_config).
    quick = dataclasses.replace(settings, ping_interval_seconds=0.2, idle_timeout_seconds=1.2)
    async with running_gateway(quick) as gw:
        reader, writer = await open_raw(gw.ws)
        writer.write(masked_text_frame('{"op":"presence","rid":1}'))  # answered: not_authenticated
        loop = asyncio.get_running_loop()
        answer_until = loop.time() + 1.5  # longer than the timeout: a peer that answers stays
        pings: list[float] = []
        close_code = None
        async with asyncio.timeout(10):
            while close_code is None:
                head = await reader.readexactly(2)
                opcode, size = head[0] & 0x0F, head[1] & 0x7F
                payload = await reader.readexactly(size)
                if opcode == 0x9:  # ping
                    pings.append(loop.time())
                    if loop.time() < answer_until:
                        writer.write(masked_frame(0xA, payload))
                elif opcode == 0x8:  # close
                    close_code = struct.unpack("!H", payload[:2])[0]
        writer.close()
    assert close_code == CloseCode.INTERNAL  # 1011 "keepalive ping timeout"
    answered = [t for t in pings if t < answer_until]
    assert len(answered) >= 5
    assert pings[-1] >= answer_until  # the first ping not answered came after the answered ones


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients must mask) of a payload under 126 bytes."""
    mask = os.urandom(4)
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
