"""Maintenance mode as the operator runs it (`procreche maintenance`), on two gateways: new
logins, API calls and handshakes get `503 maintenance` with the message, connected clients
are moved off, and when it ends they resume without a gap."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from realtime import maintenance
from realtime.client import Client
from realtime.errors import CloseCode
from realtime.settings import Settings
from tests.conftest import DEMO_PASSWORD, Gateway, bearer, running_gateway, wait_for
from tests.processes import procreche_env, run_cli

pytestmark = pytest.mark.usefixtures("demo_families")

MESSAGE = "Mise à jour de procreche : retour vers 14 h."
JSON = [Subprotocol("procreche.v1.json")]


def assert_maintenance(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "60"
    assert (response.json()["code"], response.json()["detail"]) == ("maintenance", MESSAGE)


async def refused_handshake(gateway: Gateway) -> dict[str, object]:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(gateway.ws, subprotocols=JSON):
            pass
    assert refused.value.response.status_code == 503
    body: dict[str, object] = json.loads(refused.value.response.body or b"{}")
    return body


async def test_the_operator_switches_it_on_and_off_across_gateways(
    settings: Settings, tmp_path: Path, demo_families: dict[str, int]
) -> None:
    household = f"family:{demo_families['Famille Martin']}"
    env = procreche_env(settings, tmp_path)
    quick = dataclasses.replace(settings, drain_grace_seconds=0.5)
    async with running_gateway(quick) as a, running_gateway(quick) as b:
        parent_token, staff_token = await a.login("martin@demo.test"), await b.login("staff@demo.test")
        async with Client.connect(a.ws, parent_token) as parent, Client.connect(b.ws, staff_token) as staff:
            await parent.subscribe(household)
            seen = (await staff.publish(household, "avant la maintenance"))["seq"]
            assert (await parent.next_push())["seq"] == seen

            code, out = await run_cli("maintenance", "on", MESSAGE, env=env)
            assert code == 0, out
            # Each gateway tells its clients why, then closes what is left after the grace.
            for client in (parent, staff):
                frame = await client.next_push()
                assert frame["op"] == "reconnect"
                assert frame["maintenance"]["message"] == MESSAGE
                await asyncio.wait_for(client.ws.wait_closed(), 5)
                assert client.ws.close_code == CloseCode.SERVICE_RESTART

        for gateway in (a, b):
            bernard = {"email": "bernard@demo.test", "password": DEMO_PASSWORD}
            assert_maintenance(await gateway.http.post("/api/login", json=bernard))
            assert_maintenance(await gateway.http.get("/api/me", headers=bearer(parent_token)))
            assert (await refused_handshake(gateway))["code"] == "maintenance"
            state = (await gateway.http.get("/api/maintenance")).json()
            assert (state["active"], state["message"]) == (True, MESSAGE)
            health = await gateway.http.get("/healthz")
            assert (health.status_code, health.json()) == (200, {"status": "ok", "maintenance": True})
            # The app itself still loads, to show the message.
            assert (await gateway.http.get("/")).status_code == 200
        code, out = await run_cli("maintenance", env=env)
        assert (code, MESSAGE in out) == (0, True), out

        code, out = await run_cli("maintenance", "off", env=env)
        assert code == 0, out

        async def both_back() -> bool:
            return a.services.maintenance.current is None and b.services.maintenance.current is None

        await wait_for(both_back)
        assert (await a.http.get("/api/maintenance")).json() == {"active": False}
        assert (await b.http.get("/api/me", headers=bearer(staff_token))).status_code == 200
        # Sessions survive it: the parent resumes from the last seq seen, nothing missed.
        async with Client.connect(b.ws, staff_token) as staff, Client.connect(a.ws, parent_token) as parent:
            after = (await staff.publish(household, "après la maintenance"))["seq"]
            await parent.subscribe(household, since=seen)
            assert [m["seq"] for m in await parent.pushes_until(after - seen)] == list(range(seen + 1, after + 1))


async def test_a_gateway_started_during_maintenance_refuses_at_once(gateway: Gateway, settings: Settings) -> None:
    s = gateway.services
    await maintenance.switch_on(s.pool, s.redis, s.keys, MESSAGE)
    async with running_gateway(settings) as late:
        assert late.services.maintenance.current is not None
        assert (await refused_handshake(late))["detail"] == MESSAGE
    # Switching it on again changes the message, not the start.
    first = await maintenance.current(s.pool)
    again = await maintenance.switch_on(s.pool, s.redis, s.keys, "Encore un peu de patience.")
    assert first is not None
    assert (again.since, again.message) == (first.since, "Encore un peu de patience.")
    assert await maintenance.switch_off(s.pool, s.redis, s.keys) is True
    assert await maintenance.switch_off(s.pool, s.redis, s.keys) is False


@pytest.mark.parametrize(("args", "exit_code"), [(("on",), 2), (("on", "  "), 1), (("on", "x" * 501), 1)])
async def test_a_bad_switch_is_refused_clearly(
    settings: Settings, tmp_path: Path, args: tuple[str, ...], exit_code: int
) -> None:
    code, out = await run_cli("maintenance", *args, env=procreche_env(settings, tmp_path))
    assert code == exit_code
    assert "procreche:" in out
    assert "Traceback" not in out
