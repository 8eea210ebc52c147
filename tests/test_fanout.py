"""Fan-out through real sockets: many subscribers, and a slow one that must not hold anyone back."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import pytest

from realtime.client import Client
from realtime.errors import CloseCode
from realtime.settings import Settings
from tests.conftest import Gateway, running_gateway, wait_for
from tests.raw_ws import masked_text_frame, open_raw

pytestmark = pytest.mark.usefixtures("demo_families")

SLOW_REASON = b"slow consumer: resume from your last seq"


async def test_every_subscriber_gets_every_message_in_order(gateway: Gateway, demo_families: dict[str, int]) -> None:
    channel = f"family:{demo_families['Famille Martin']}"
    token = await gateway.login("martin@demo.test")
    async with contextlib.AsyncExitStack() as stack:
        parents = [await stack.enter_async_context(Client.connect(gateway.ws, token)) for _ in range(40)]
        for parent in parents:
            await parent.subscribe(channel)
        staff = await stack.enter_async_context(Client.connect(gateway.ws, await gateway.login("staff@demo.test")))
        sent = [(await staff.publish(channel, f"n°{i}"))["seq"] for i in range(25)]
        for parent in parents:
            assert [m["seq"] for m in await parent.pushes_until(len(sent))] == sent


@contextlib.asynccontextmanager
async def stalled_subscriber(ws_url: str, token: str, channel: str) -> AsyncIterator[asyncio.StreamReader]:
    """A WebSocket client that subscribes, then stops reading: its receive window fills up."""
    reader, writer = await open_raw(ws_url, receive_buffer=4096)
    for frame in (
        f'{{"op":"auth","rid":1,"token":"{token}"}}',
        f'{{"op":"subscribe","rid":2,"channel":"{channel}"}}',
    ):
        writer.write(masked_text_frame(frame))
    await writer.drain()
    await asyncio.sleep(0.3)  # let the replies come back; from here on nothing is read
    try:
        yield reader
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_slow_consumer_is_closed_and_the_others_keep_receiving(
    settings: Settings, demo_families: dict[str, int]
) -> None:
    channel = f"family:{demo_families['Famille Martin']}"
    async with running_gateway(dataclasses.replace(settings, outbound_buffer_limit=65536)) as gw:
        token = await gw.login("martin@demo.test")
        async with (
            stalled_subscriber(gw.ws, token, channel) as stalled,
            Client.connect(gw.ws, token) as reader,
            Client.connect(gw.ws, await gw.login("staff@demo.test")) as staff,
        ):
            await reader.subscribe(channel)
            big = "x" * 8000
            # More than the kernel's socket buffers absorb on loopback (a few MB).
            sent = [(await staff.publish(channel, big))["seq"] for _ in range(1000)]
            received = [m["seq"] for m in await reader.pushes_until(len(sent))]
            assert received == sent
            # The stalled one was dropped from the hub, and what reached it ends on a close
            # frame with SLOW_CONSUMER, queued behind what it did not read.
            await wait_for(lambda: _count_is(gw, channel, 1))
            close = b"\x88" + bytes((2 + len(SLOW_REASON),)) + CloseCode.SLOW_CONSUMER.to_bytes(2, "big")
            data = b""
            while close not in data:
                chunk = await asyncio.wait_for(stalled.read(1 << 20), 10)
                assert chunk, "connection ended without the close frame"
                data += chunk


async def _count_is(gateway: Gateway, channel: str, count: int) -> bool:
    return gateway.services.hub.subscriber_count(channel) == count
