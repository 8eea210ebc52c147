"""The Postgres pool and the schema: one place that opens connections and migrates."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeAlias

import asyncpg

from realtime.errors import Unavailable

SCHEMA_LOCK = 0x70726F63  # pg_advisory lock id: 'proc'
CONNECT_TIMEOUT = 15.0
COMMAND_TIMEOUT = 10.0

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"


def schema_path() -> Path:
    """schema.sql ships inside the wheel; in a source checkout it stands at the root."""
    packaged = Path(__file__).with_name("schema.sql")
    return packaged if packaged.exists() else Path(__file__).resolve().parent.parent / "schema.sql"


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


@asynccontextmanager
async def open_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> AsyncIterator[Pool]:
    try:
        pool = await asyncio.wait_for(
            asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                command_timeout=COMMAND_TIMEOUT,
                init=_init_connection,
                timeout=CONNECT_TIMEOUT,
            ),
            CONNECT_TIMEOUT,
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise Unavailable(f"PostgreSQL is not reachable: {exc}") from exc
    try:
        yield pool
    finally:
        # Shielded: a cancelled shutdown must still return connections to the server.
        await asyncio.shield(_close(pool))


async def _close(pool: Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), COMMAND_TIMEOUT)
    except TimeoutError:
        pool.terminate()


async def migrate(pool: Pool) -> None:
    sql = schema_path().read_text(encoding="utf-8")
    async with pool.acquire() as conn, conn.transaction():
        # Several processes may start at once: one applies the schema, the others wait.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        await conn.execute(sql)


@asynccontextmanager
async def woken_by(pool: Pool, channel: str, wake: asyncio.Event) -> AsyncIterator[None]:
    """Set `wake` at each NOTIFY on `channel` while the block runs: a worker sleeping on
    its queue hears of new work at once (it polls too, in case a notification is lost)."""

    def on_notify(*_: object) -> None:
        wake.set()

    async with pool.acquire() as conn:
        await conn.add_listener(channel, on_notify)
        try:
            yield
        finally:
            # InterfaceError: PostgreSQL closed the connection meanwhile (a restart) and the
            # pool has taken it back; its LISTEN went with it, nothing is left to remove.
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await conn.remove_listener(channel, on_notify)
