"""`procreche` as an operator runs it: real processes, real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from realtime.client import Client
from realtime.settings import Settings
from tests.processes import gateway_process, login, terminate
from tests.processes import procreche_env as env_for
from tests.processes import run_cli as run


@asynccontextmanager
async def serving(env: dict[str, str]) -> AsyncIterator[str]:
    async with gateway_process(env, demo=True) as gateway:
        yield gateway.base
        assert await terminate(gateway.process) == 0


async def exchange_on_martin_household(base: str) -> None:
    """The issue's "done when": staff and martin@demo.test exchange messages live."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        staff_token = await login(http, "staff@demo.test")
        martin_token = await login(http, "martin@demo.test")
        me = (await http.get("/api/me", headers={"Authorization": f"Bearer {martin_token}"})).json()
    household = next(c["channel"] for c in me["channels"] if c["channel"].startswith("family:"))
    ws = base.replace("http", "ws") + "/ws"
    async with Client.connect(ws, staff_token) as staff, Client.connect(ws, martin_token) as martin:
        await staff.subscribe(household)
        await martin.subscribe(household)
        hello = await staff.publish(household, "Bonjour, Léa a bien dormi.")
        assert (await martin.next_push())["seq"] == hello["seq"]
        assert (await staff.next_push())["seq"] == hello["seq"]
        answer = await martin.publish(household, "Merci beaucoup !")
        pushed = await staff.next_push()
        assert (pushed["seq"], pushed["author"]["name"]) == (answer["seq"], "Julie Martin")


async def test_serve_on_configured_servers(settings: Settings, tmp_path: Path) -> None:
    async with serving(env_for(settings, tmp_path)) as base:
        await exchange_on_martin_household(base)


async def test_serve_with_no_configuration_starts_embedded_servers(tmp_path: Path) -> None:
    data = tmp_path / "var"
    async with serving(env_for(None, data)) as base:
        await exchange_on_martin_household(base)
    assert (data / "postgres" / "PG_VERSION").exists()
    assert (data / "redis" / "appendonly.aof").exists()
    # A restart on the same folder finds everything again, and the messages are kept.
    async with serving(env_for(None, data)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            token = await login(http, "martin@demo.test")
            me = (await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})).json()
        household = next(c["channel"] for c in me["channels"] if c["channel"].startswith("family:"))
        async with Client.connect(base.replace("http", "ws") + "/ws", token) as martin:
            reply = await martin.subscribe(household, since=0)
            assert reply["seq"] == 2
            assert [m["body"]["text"] for m in await martin.pushes_until(2)] == [
                "Bonjour, Léa a bien dormi.",
                "Merci beaucoup !",
            ]


async def test_migrate_and_demo_are_idempotent(settings: Settings, tmp_path: Path) -> None:
    env = env_for(settings, tmp_path)
    for _ in range(2):
        code, out = await run("migrate", env=env)
        assert code == 0, out
        code, out = await run("demo", env=env)
        assert code == 0, out
        assert "Crèche Les Petits Pas" in out


async def test_demo_password_is_generated_once_and_kept(settings: Settings, tmp_path: Path) -> None:
    env = env_for(settings, tmp_path)
    del env["PROCRECHE_DEMO_PASSWORD"]
    code, first = await run("demo", env=env)
    assert code == 0, first
    password = (tmp_path / "demo-password").read_text().strip()
    assert password in first
    assert (tmp_path / "demo-password").stat().st_mode & 0o077 == 0
    code, second = await run("demo", env=env)
    assert password in second


async def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    env = env_for(None, tmp_path)
    env["PROCRECHE_PARTITIONS"] = "many"
    code, out = await run("migrate", env=env)
    assert code == 2
    assert "PROCRECHE_PARTITIONS must be a whole number" in out


@pytest.mark.parametrize("url", ["postgresql://nobody@127.0.0.1:1/none"])
async def test_unreachable_database_is_a_clear_error(tmp_path: Path, url: str) -> None:
    env = env_for(None, tmp_path) | {"DATABASE_URL": url, "REDIS_URL": "redis://127.0.0.1:1/0"}
    code, out = await run("migrate", env=env)
    assert code == 1
    assert "PostgreSQL is not reachable" in out
