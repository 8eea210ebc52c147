"""Opening Redis: one place that sets timeouts and owns the client's lifetime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from realtime.errors import Unavailable

SOCKET_TIMEOUT = 10.0  # above the longest BLOCK we issue (XREADGROUP blocks 1 s)
# A burst of requests (a reconnect storm: hundreds of auth and subscribe at once) waits for
# a free connection, up to SOCKET_TIMEOUT, instead of failing at once as redis-py's default
# pool does past its size.
MAX_CONNECTIONS = 64


@asynccontextmanager
async def open_redis(url: str) -> AsyncIterator[Redis]:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=SOCKET_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=5.0,
        health_check_interval=30,
    )
    client = Redis.from_pool(pool)
    try:
        await asyncio.wait_for(client.ping(), SOCKET_TIMEOUT)
    except (RedisError, OSError, TimeoutError) as exc:
        await client.aclose()
        raise Unavailable(f"Redis is not reachable: {exc}") from exc
    try:
        yield client
    finally:
        await asyncio.shield(client.aclose())
