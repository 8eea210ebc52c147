"""The gateway's long-lived objects, built once per process and owned by the app's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.facts_cache import FactsCache
from gateway.hub import Hub
from gateway.live import LiveFeed
from gateway.sessions import SessionRegistry
from realtime.accounts import Accounts
from realtime.bus import Bus
from realtime.consent import Consents
from realtime.database import Pool, migrate, open_pool
from realtime.directory import Directory
from realtime.errors import CloseCode
from realtime.invalidation import Change
from realtime.keys import Keys
from realtime.message_store import MessageStore
from realtime.passwords import Passwords
from realtime.redis_client import open_redis
from realtime.settings import Settings


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


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    if settings.database_url is None or settings.redis_url is None:
        raise ValueError("open_services needs server URLs; see realtime.embedded.servers")
    keys = Keys(settings.redis_prefix, settings.partitions)
    async with open_pool(settings.database_url) as pool, open_redis(settings.redis_url) as redis:
        await migrate(pool)
        hub = Hub(settings.outbound_buffer_limit)
        sessions = SessionRegistry()
        directory = Directory(pool)
        facts = FactsCache(directory)

        def on_change(change: Change) -> None:
            facts.invalidate(change)
            sessions.apply(change)

        live = LiveFeed(
            redis,
            keys,
            hub,
            on_lost=lambda: sessions.close_all(CloseCode.LIVE_PATH_LOST, "live feed lost: resume from your last seq"),
            on_change=on_change,
        )
        bus = Bus(redis, keys, MessageStore(pool), history_maxlen=settings.history_maxlen)
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
        )
        try:
            async with live.running():
                yield services
        finally:
            await sessions.aclose()
