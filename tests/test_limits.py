"""The gateway's limits at work: Origin check, rate limit, keepalive, and drain."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from realtime.client import Client
from realtime.errors import CloseCode
from realtime.invalidation import announce
from realtime.settings import Settings
from tests.conftest import Gateway, running_gateway
from tests.processes import procreche_env, run_cli
from tests.raw_ws import open_raw

pytestmark = pytest.mark.usefixtures("demo_families")

JSON = [Subprotocol("procreche.v1.json")]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [("{own}", True), (None, True), ("http://evil.example", False), ("null", False), ("http://127.0.0.1.evil", False)],
)
async def test_the_origin_is_checked_at_the_handshake(gateway: Gateway, origin: str | None, allowed: bool) -> None:
    headers = {} if origin is None else {"Origin": origin.format(own=gateway.base)}
    if allowed:
        async with connect(gateway.ws, subprotocols=JSON, additional_headers=headers):
            return
    with pytest.raises(InvalidStatus) as refused:
        async with connect(gateway.ws, subprotocols=JSON, additional_headers=headers):
            pass
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body or b"{}")["code"] == "origin_not_allowed"


async def test_listed_origins_are_allowed(settings: Settings) -> None:
    configured = dataclasses.replace(settings, allowed_origins=frozenset({"https://app.creche.example"}))
    async with (
        running_gateway(configured) as gw,
        connect(gw.ws, subprotocols=JSON, additional_headers={"Origin": "https://app.creche.example"}),
    ):
        pass


async def test_a_connection_over_its_rate_gets_an_error_then_is_closed(settings: Settings) -> None:
    async with running_gateway(dataclasses.replace(settings, rate_per_second=2, rate_burst=5)) as gw:
        token = await gw.login("martin@demo.test")
        async with Client.connect(gw.ws, token) as client:
            for n in range(10):
                await client.send_raw(json.dumps({"op": "unsubscribe", "rid": n, "channel": "family:1"}))
            frames = []
            while (frame := await client.next_push()) and frame.get("rid") is not None:
                frames.append(frame)
            assert frame["error"]["code"] == "rate_limited"
            await asyncio.wait_for(client.ws.wait_closed(), 5)
            assert client.ws.close_code == CloseCode.RATE_LIMITED


async def test_a_peer_that_stops_answering_pings_is_closed(settings: Settings) -> None:
    async with running_gateway(
        dataclasses.replace(settings, ping_interval_seconds=0.3, idle_timeout_seconds=0.8)
    ) as gw:
        reader, writer = await open_raw(gw.ws)
        # Read (so the pings arrive) but never answer them: the server must give up.
        data = b""
        async with asyncio.timeout(10):
            while chunk := await reader.read(4096):
                data += chunk
        assert b"\x89" in data  # it pinged
        writer.close()


async def test_a_drained_gateway_sends_clients_elsewhere_and_loses_nothing(
    settings: Settings, demo_families: dict[str, int]
) -> None:
    household = f"family:{demo_families['Famille Martin']}"
    quick = dataclasses.replace(settings, drain_grace_seconds=0.5, gateway_name="gw-a")
    async with running_gateway(quick) as a, running_gateway(dataclasses.replace(settings, gateway_name="gw-b")) as b:
        token = await a.login("martin@demo.test")
        staff_token = await b.login("staff@demo.test")
        async with Client.connect(a.ws, token) as parent, Client.connect(b.ws, staff_token) as staff:
            await parent.subscribe(household)
            first = await staff.publish(household, "avant la maintenance")
            seen = (await parent.next_push())["seq"]
            assert seen == first["seq"]
            await announce(a.services.redis, a.services.keys, drain=["gw-a"])
            assert await parent.next_push() == {"op": "reconnect"}
            # gw-b was not named: it keeps serving.
            assert not b.services.draining.is_set()
            assert (await a.http.get("/healthz")).status_code == 503
            with pytest.raises(InvalidStatus) as refused:
                async with connect(a.ws, subprotocols=JSON):
                    pass
            assert refused.value.response.status_code == 503
            during = [(await staff.publish(household, f"pendant {i}"))["seq"] for i in range(3)]
            await asyncio.wait_for(parent.ws.wait_closed(), 5)
            assert parent.ws.close_code == CloseCode.SERVICE_RESTART
            assert a.services.drained.is_set()
        async with Client.connect(b.ws, token) as parent:
            await parent.subscribe(household, since=seen)
            assert [m["seq"] for m in await parent.pushes_until(len(during))] == during


async def test_procreche_drain_drains_the_named_gateway_only(settings: Settings, tmp_path: Path) -> None:
    async with (
        running_gateway(dataclasses.replace(settings, gateway_name="gw-maintenance")) as target,
        running_gateway(dataclasses.replace(settings, gateway_name="gw-other")) as other,
    ):
        code, out = await run_cli("drain", "gw-maintenance", env=procreche_env(settings, tmp_path))
        assert code == 0, out
        assert "gw-maintenance" in out
        await asyncio.wait_for(target.services.drained.wait(), 15)
        assert not other.services.draining.is_set()
