"""The live feed: this process's one Redis pub/sub connection, one subscription per
channel that has local subscribers, feeding the hub.

Pub/sub is only the live path: if the connection to Redis breaks, messages published
meanwhile never arrive here. So a lost connection closes every WebSocket of the process
with LIVE_PATH_LOST; clients resume from their last sequence (from the history, which is
the record), and this feed reconnects with a fresh subscription set.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from gateway.hub import AUDIENCES, Hub, Outgoing
from realtime.errors import Unavailable
from realtime.invalidation import Change
from realtime.keys import Keys
from realtime.messages import unpack_record
from realtime.metrics import LATENCY_BUCKETS, Histogram

log = logging.getLogger("procreche.live")

SUBSCRIBE_TIMEOUT = 5.0


class LiveFeed:
    def __init__(
        self, redis: Redis, keys: Keys, hub: Hub, on_lost: Callable[[], None], on_change: Callable[[Change], None]
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.hub = hub
        self.on_lost = on_lost
        self.on_change = on_change
        self._pubsub: PubSub | None = None
        # Redis answers SUBSCRIBE and UNSUBSCRIBE in the order they were sent: the state is
        # driven by those answers only, each SUBSCRIBE has its own waiter (first in, first
        # answered), and UNSUBSCRIBEs not answered yet are counted, so that a late answer to
        # an old SUBSCRIBE can never make us believe a channel is followed when it is not.
        self._confirmed: set[str] = set()
        self._waiting: dict[str, collections.deque[asyncio.Future[None]]] = {}
        self._unsubscribing: collections.Counter[str] = collections.Counter()
        self._lock = asyncio.Lock()
        self._ready = asyncio.Event()
        # Seconds from a message's `at` (the publishing gateway's clock) to its writing to
        # this gateway's subscribers: one observation per message, not per subscriber.
        self.latency = Histogram(LATENCY_BUCKETS)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LiveFeed]:
        task = asyncio.create_task(self._run(), name="live-feed")
        try:
            await asyncio.wait_for(self._ready.wait(), SUBSCRIBE_TIMEOUT * 2)
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if self._pubsub is not None:
                await asyncio.shield(self._pubsub.aclose())  # type: ignore[no-untyped-call]

    async def ensure(self, channel: str) -> None:
        """Return once Redis confirms the subscription: from then on no PUBLISH is missed."""
        waiters = self._waiting.get(channel)
        unsubscribing = self._unsubscribing[channel] > 0
        if channel in self._confirmed and not unsubscribing and not waiters:
            return
        if waiters and not unsubscribing:
            # A SUBSCRIBE sent after every UNSUBSCRIBE is on its way: its answer suffices.
            waiter = waiters[-1]
        else:
            waiter = asyncio.get_running_loop().create_future()
            waiters = self._waiting.setdefault(channel, collections.deque())
            waiters.append(waiter)
            try:
                await self._command("subscribe", channel)
            except BaseException:
                waiters.remove(waiter)
                raise
        try:
            await asyncio.wait_for(asyncio.shield(waiter), SUBSCRIBE_TIMEOUT)
        except TimeoutError:
            raise Unavailable("the live feed did not confirm the subscription") from None

    async def release(self, channel: str) -> None:
        """The last local subscriber left: stop receiving the channel."""
        self._unsubscribing[channel] += 1
        try:
            await self._command("unsubscribe", channel)
        except (RedisError, OSError, Unavailable):
            self._unsubscribing[channel] -= 1
            if self._unsubscribing[channel] <= 0:
                del self._unsubscribing[channel]

    async def _command(self, verb: str, channel: str) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            raise Unavailable("the live feed is reconnecting")
        async with self._lock:
            try:
                await asyncio.wait_for(getattr(pubsub, verb)(self.keys.live(channel)), SUBSCRIBE_TIMEOUT)
            except (RedisError, OSError, TimeoutError) as exc:
                raise Unavailable("the live feed is unavailable") from exc

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.keys.control())
                self._pubsub = pubsub
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        backoff = 0.1
                        try:
                            self._handle(message)
                        except (ValueError, KeyError, TypeError):
                            log.exception("undecodable live message on %r skipped", message.get("channel"))
            except (RedisError, OSError) as exc:
                log.warning("live feed lost (%s); closing local connections, reconnecting", exc)
            finally:
                self._pubsub = None
                self._confirmed.clear()
                self._unsubscribing.clear()
                for waiters in self._waiting.values():
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(Unavailable("the live feed was lost"))
                            # Retrieved here: its awaiter may be gone (cancelled, timed out).
                            waiter.exception()
                self._waiting.clear()
                await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]
            self.on_lost()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        raw_channel = _text(message["channel"])
        if raw_channel == self.keys.control():
            if kind == "subscribe":
                self._ready.set()
            elif kind == "message":
                self.on_change(Change.unpack(message["data"]))
            return
        channel = self.keys.live_channel_name(raw_channel)
        if kind == "message":
            head, _, rest = message["data"].partition(b" ")
            if head == b"w":
                self.hub.deliver(channel, Outgoing.withdrawal(channel, rest.decode()))
            elif head == b"r":
                if closed := self.hub.renumbered(channel):
                    log.warning(
                        "%s renumbered under epoch %s: %d subscribers here resume", channel, rest.decode(), closed
                    )
            elif head[:1] == b"e" and (audience := AUDIENCES.get(head[1:].decode())) is not None:
                self.hub.deliver(channel, Outgoing.event(msgpack.unpackb(rest), audience))
            else:
                record = unpack_record(int(head), rest)
                if self.hub.deliver(channel, Outgoing.of(record)):
                    self.latency.observe(max(0.0, time.time() - record.at.timestamp()))
        elif kind == "subscribe":
            self._confirmed.add(channel)
            waiters = self._waiting.get(channel)
            if waiters:
                waiter = waiters.popleft()
                if not waiters:
                    del self._waiting[channel]
                if not waiter.done():
                    waiter.set_result(None)
        elif kind == "unsubscribe":
            self._confirmed.discard(channel)
            self._unsubscribing[channel] -= 1
            if self._unsubscribing[channel] <= 0:
                del self._unsubscribing[channel]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
