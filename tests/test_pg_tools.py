"""Finding PostgreSQL's client programs by version, and running them without the password
on their command line."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from realtime import pg_tools
from realtime.pg_tools import PgToolError, Target, target


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://procreche:p%40ss%3Aword@db:5432/procreche",
            Target("postgresql://procreche@db:5432/procreche", {"PGPASSWORD": "p@ss:word"}),
        ),
        (
            "postgresql://procreche@db/procreche?sslmode=require&password=secret",
            Target("postgresql://procreche@db/procreche?sslmode=require", {"PGPASSWORD": "secret"}),
        ),
        # pgserver's URL: no password, a socket folder in the query, left as it is.
        (
            "postgresql://postgres:@/postgres?host=/tmp/pg.sock",
            Target("postgresql://postgres@/postgres?host=/tmp/pg.sock", {}),
        ),
        ("postgresql://db/procreche", Target("postgresql://db/procreche", {})),
    ],
)
def test_the_password_goes_to_the_environment_only(url: str, expected: Target) -> None:
    assert target(url) == expected


async def test_the_program_matching_the_servers_major_version_is_chosen() -> None:
    embedded = pg_tools.pgserver_bin()
    assert embedded is not None
    own = await pg_tools.probe(embedded / "pg_dump")
    assert own is not None
    chosen = await pg_tools.find("pg_dump", own.major)
    assert chosen.major == own.major
    # A newer archive needs a pg_restore at least as new.
    assert (await pg_tools.find("pg_restore", own.major - 1, at_least=own.major)).major >= own.major


async def test_a_server_newer_than_every_program_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(PgToolError, match=r"pg_dump for PostgreSQL 99 or later is needed .* --pg-bin"):
        await pg_tools.find("pg_dump", 99)
    with pytest.raises(PgToolError, match=f"none was found in {tmp_path}"):
        await pg_tools.find("pg_dump", 15, explicit_dir=tmp_path)


async def test_a_program_that_outlives_its_timeout_is_killed() -> None:
    started = time.monotonic()
    with pytest.raises(PgToolError, match="did not finish within"):
        await pg_tools.run(Path("/bin/sleep"), ["30"], env={}, timeout=0.2)
    assert time.monotonic() - started < 5
    await asyncio.sleep(0)
