"""Opening Redis: one place that sets timeouts and owns the client's lifetime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import RedisError

from realtime.errors import Unavailable

SOCKET_TIMEOUT = 10.0  # above the longest BLOCK we issue (XREADGROUP blocks 1 s)


@asynccontextmanager
async def open_redis(url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=5.0,
        health_check_interval=30,
    )
    try:
        await asyncio.wait_for(client.ping(), SOCKET_TIMEOUT)
    except (RedisError, OSError, TimeoutError) as exc:
        await client.aclose()
        raise Unavailable(f"Redis is not reachable: {exc}") from exc
    try:
        yield client
    finally:
        await asyncio.shield(client.aclose())
