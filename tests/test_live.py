"""The live feed against a real Redis: subscriptions confirmed in order, never believed
active when Redis has dropped them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from gateway.hub import Hub, Subscriber
from gateway.live import LiveFeed
from realtime.codec import JsonCodec
from realtime.keys import Keys
from realtime.settings import Settings
from tests.conftest import wait_for
from tests.test_hub import FakeSink

CHANNEL = "family:1"


@contextlib.asynccontextmanager
async def feed(settings: Settings, redis: Redis, hub: Hub) -> AsyncIterator[LiveFeed]:
    live = LiveFeed(redis, Keys(settings.redis_prefix, settings.partitions), hub, lambda: None, lambda _: None)
    async with live.running():
        yield live


async def test_a_subscribe_racing_the_last_unsubscribe_stays_subscribed(settings: Settings, redis: Redis) -> None:
    hub = Hub(1 << 20)
    sink = FakeSink()
    sub = Subscriber(sink, JsonCodec(), CHANNEL)
    hub.add(sub)
    hub.go_live(sub, 0)
    keys = Keys(settings.redis_prefix, settings.partitions)
    async with feed(settings, redis, hub) as live:
        # A first subscriber's SUBSCRIBE is on its way; it leaves before the answer (its
        # UNSUBSCRIBE follows), and a second subscriber arrives at once.
        first = asyncio.create_task(live.ensure(CHANNEL))
        await asyncio.sleep(0)
        await live.release(CHANNEL)
        await live.ensure(CHANNEL)
        await first
        await redis.publish(keys.live(CHANNEL), b"w some-id")
        await wait_for(lambda: _written(sink))


async def test_ensure_after_confirmation_is_immediate(settings: Settings, redis: Redis) -> None:
    async with feed(settings, redis, Hub(1 << 20)) as live:
        await live.ensure(CHANNEL)
        # Confirmed: no round trip (the pub/sub connection is not even touched).
        live._pubsub = None
        await live.ensure(CHANNEL)


async def _written(sink: FakeSink) -> bool:
    return bool(sink.frames)
