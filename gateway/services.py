"""The gateway's long-lived objects, built once per process and owned by the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from redis.asyncio import Redis

from gateway.facts_cache import FactsCache
from gateway.hub import Hub
from gateway.live import LiveFeed
from gateway.maintenance import MaintenanceWatch
from gateway.sessions import SessionRegistry
from realtime.accounts import Accounts
from realtime.bus import Bus
from realtime.consent import Consents
from realtime.database import Pool, migrate, open_pool
from realtime.directory import Directory
from realtime.errors import CloseCode, Unavailable
from realtime.invalidation import Change
from realtime.keys import Keys
from realtime.maintenance import Maintenance
from realtime.media import MediaLibrary
from realtime.media_store import MediaStore, open_media_store
from realtime.message_store import MessageStore
from realtime.metrics import GatewayCounts
from realtime.passwords import Passwords
from realtime.presence import REFRESH_SECONDS as PRESENCE_REFRESH_SECONDS
from realtime.presence import Presence
from realtime.presence import member as presence_member
from realtime.receipts import Receipts
from realtime.redis_client import open_redis
from realtime.reports import Reports
from realtime.settings import Settings

log = logging.getLogger("procreche.gateway")


@dataclass
class Services:
    settings: Settings
    pool: Pool
    redis: Redis
    keys: Keys
    accounts: Accounts
    directory: Directory
    bus: Bus
    hub: Hub
    live: LiveFeed
    consents: Consents
    sessions: SessionRegistry
    facts: FactsCache
    receipts: Receipts
    presence: Presence
    media: MediaLibrary
    media_store: MediaStore
    reports: Reports
    maintenance: MaintenanceWatch
    # Set when a drain starts (no new WebSocket, /healthz 503) and when it is complete.
    draining: asyncio.Event = field(default_factory=asyncio.Event)
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    # Connections and publishes, for /metrics (gateway/metrics.py).
    counts: GatewayCounts = field(default_factory=GatewayCounts)

    async def drain(self) -> None:
        """Maintenance without loss: accept no new WebSocket, tell every client to reconnect
        (elsewhere), close what remains after the grace period. Clients resume from their
        last seq on another gateway."""
        if self.draining.is_set():
            await self.drained.wait()
            return
        self.draining.set()
        await self._move_clients({"op": "reconnect"}, "draining: reconnect to another gateway")
        self.drained.set()

    async def leave_for_maintenance(self, state: Maintenance) -> None:
        """Maintenance mode: the same moving off, but no gateway takes the clients until it
        ends; the frame carries the operator's message for them to show meanwhile."""
        await self._move_clients({"op": "reconnect", "maintenance": state.public()}, "maintenance")

    async def _move_clients(self, frame: dict[str, object], reason: str) -> None:
        log.info("%s: %d connections told to reconnect", reason, len(self.sessions.all()))
        for session in self.sessions.all():
            session.push(frame)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.sessions.empty.wait(), self.settings.drain_grace_seconds)
        self.sessions.close_all(CloseCode.SERVICE_RESTART, reason)

    def wants_drain(self, change: Change) -> bool:
        return "*" in change.drain or (bool(self.settings.gateway_name) and self.settings.gateway_name in change.drain)


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    if settings.database_url is None or settings.redis_url is None:
        raise ValueError("open_services needs server URLs; see realtime.embedded.servers")
    keys = Keys(settings.redis_prefix, settings.partitions)
    async with (
        open_pool(settings.database_url) as pool,
        open_redis(settings.redis_url) as redis,
        open_media_store(settings) as media_store,
    ):
        await migrate(pool)
        hub = Hub(settings.outbound_buffer_limit)
        sessions = SessionRegistry()
        directory = Directory(pool)
        facts = FactsCache(directory)

        def on_change(change: Change) -> None:
            if change.maintenance:
                watch.changed()
            facts.invalidate(change)
            sessions.apply(change)
            if services.wants_drain(change):
                drains.add(task := asyncio.get_running_loop().create_task(services.drain()))
                task.add_done_callback(drains.discard)

        drains: set[asyncio.Task[None]] = set()

        def on_lost() -> None:
            sessions.close_all(CloseCode.LIVE_PATH_LOST, "live feed lost: resume from your last seq")
            watch.changed()  # a maintenance switch may have been announced meanwhile

        live = LiveFeed(
            redis,
            keys,
            hub,
            on_lost=on_lost,
            on_change=on_change,
        )
        bus = Bus(redis, keys, MessageStore(pool), history_maxlen=settings.history_maxlen)
        watch = MaintenanceWatch(pool, lambda state: services.leave_for_maintenance(state))
        services = Services(
            settings=settings,
            pool=pool,
            redis=redis,
            keys=keys,
            accounts=Accounts(pool, redis, keys, settings, Passwords()),
            directory=directory,
            bus=bus,
            hub=hub,
            live=live,
            consents=Consents(pool, directory, bus),
            sessions=sessions,
            facts=facts,
            receipts=Receipts(pool),
            presence=Presence(redis, keys),
            media=MediaLibrary(pool),
            media_store=media_store,
            reports=Reports(pool),
            maintenance=watch,
        )
        await watch.reload()
        background = [asyncio.create_task(_refresh_presence(services)), asyncio.create_task(watch.run())]
        try:
            async with live.running():
                yield services
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await sessions.aclose()


async def _refresh_presence(services: Services) -> None:
    """Keep this gateway's household connections present; a dead gateway's entries expire."""
    while True:
        await asyncio.sleep(PRESENCE_REFRESH_SECONDS)
        present: dict[str, set[str]] = {}
        for session in services.sessions.all():
            for channel in session.channels():
                if channel.startswith("family:"):
                    present.setdefault(channel, set()).add(presence_member(session.user_id, session.name))
        try:
            await services.presence.here(present)
        except Unavailable:
            log.warning("presence refresh failed; retrying at the next round")
