"""Bad input on the WebSocket gets a typed error frame or a documented close code, never a crash."""

from __future__ import annotations

import dataclasses
import json

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from realtime.client import Client, ReplyError
from realtime.errors import CloseCode
from realtime.protocol import ServerProtocol
from realtime.settings import Settings
from tests.conftest import Gateway, bearer, running_gateway

pytestmark = pytest.mark.usefixtures("demo_families")

JSON = [Subprotocol("procreche.v1.json")]


async def test_requests_before_auth_are_refused_then_auth_works(gateway: Gateway) -> None:
    token = await gateway.login("martin@demo.test")
    async with connect(gateway.ws, subprotocols=JSON) as ws:
        await ws.send(json.dumps({"op": "subscribe", "rid": 1, "channel": "family:1"}))
        reply = json.loads(await ws.recv())
        assert reply == {
            "op": "reply",
            "rid": 1,
            "ok": False,
            "error": {"code": "not_authenticated", "message": "send 'auth' first"},
        }
        await ws.send(json.dumps({"op": "auth", "rid": 2, "token": token}))
        assert json.loads(await ws.recv())["ok"] is True


@pytest.mark.parametrize(
    ("frame", "rid", "code"),
    [
        ("not json", None, "bad_frame"),
        ("[1, 2]", None, "bad_frame"),
        ('{"op": "publish"}', None, "bad_frame"),
        ('{"op": "publish", "rid": true}', None, "bad_frame"),
        ('{"op": "dance", "rid": 7}', 7, "unknown_op"),
        ('{"op": "subscribe", "rid": 8, "channel": "family:01"}', 8, "bad_channel"),
        ('{"op": "subscribe", "rid": 9, "channel": "family:1", "since": -1}', 9, "bad_frame"),
        ('{"op": "publish", "rid": 10, "channel": "family:1", "msg_id": "short"}', 10, "bad_frame"),
        ('{"op": "auth", "rid": 11, "token": "again"}', 11, "already_authenticated"),
    ],
)
async def test_malformed_frames_get_an_error_and_the_connection_lives_on(
    gateway: Gateway, frame: str, rid: int | None, code: str
) -> None:
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as client:
        await client.send_raw(frame)
        # The error reply of a frame without a usable rid comes back with rid null.
        error = await client.next_push()
        assert (error["op"], error["ok"], error["rid"], error["error"]["code"]) == ("reply", False, rid, code)
        me = await gateway.me(await gateway.login("staff@demo.test"))
        assert (await client.subscribe(me["channels"][0]["channel"]))["ok"] is True


async def test_bad_bodies_are_refused_with_bad_body(gateway: Gateway, demo_families: dict[str, int]) -> None:
    channel = f"family:{demo_families['Famille Martin']}"
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        for body in (
            None,
            "text",
            {"kind": "video"},
            {"kind": "text", "text": "   "},
            {"kind": "text", "text": "x" * 10_001},
            {"kind": "text", "text": "hi", "extra": 1},
        ):
            with pytest.raises(ReplyError) as refused:
                await staff.request("publish", channel=channel, msg_id="abcdefgh-1", body=body)
            assert refused.value.code == "bad_body", body


async def refused_auth(url: str, token: str) -> tuple[str, int]:
    """Authenticate with `token`, expecting a refusal: the error code, then the close code."""
    async with connect(url, subprotocols=JSON) as ws:
        await ws.send(json.dumps({"op": "auth", "rid": 1, "token": token}))
        code: str = json.loads(await ws.recv())["error"]["code"]
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        return code, closed.value.rcvd.code


async def test_invalid_token_is_refused_and_closed(gateway: Gateway) -> None:
    assert await refused_auth(gateway.ws, "forged") == ("invalid_token", CloseCode.AUTH_FAILED)


async def test_a_logged_out_token_no_longer_opens_a_socket(gateway: Gateway) -> None:
    token = await gateway.login("martin@demo.test")
    await gateway.http.post("/api/logout", headers=bearer(token))
    with pytest.raises(ReplyError) as refused:
        async with Client.connect(gateway.ws, token):
            pass
    assert refused.value.code == "invalid_token"


async def test_terms_not_accepted_closes_with_its_code(gateway: Gateway) -> None:
    token = await gateway.login("martin@demo.test", accept_terms=False)
    assert await refused_auth(gateway.ws, token) == ("terms_not_accepted", CloseCode.TERMS_NOT_ACCEPTED)


async def test_no_auth_in_time_closes_the_connection(settings: Settings) -> None:
    async with (
        running_gateway(dataclasses.replace(settings, auth_timeout_seconds=0.3)) as gw,
        connect(gw.ws, subprotocols=JSON) as ws,
    ):
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CloseCode.AUTH_TIMEOUT


async def test_an_unknown_subprotocol_is_refused_at_the_handshake(gateway: Gateway) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(gateway.ws, subprotocols=[Subprotocol("chat")]):
            pass
    assert refused.value.response.status_code == 400
    assert json.loads(refused.value.response.body or b"{}")["code"] == "unsupported_subprotocol"


async def test_an_oversized_frame_closes_with_1009(gateway: Gateway) -> None:
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as client:
        await client.send_raw("x" * (64 * 1024 + 1))
        await client.ws.wait_closed()
        assert client.ws.close_code == CloseCode.MESSAGE_TOO_BIG


async def test_healthz_names_what_is_down(gateway: Gateway) -> None:
    healthy_redis = gateway.services.redis
    gateway.services.redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        response = await gateway.http.get("/healthz")
    finally:
        await gateway.services.redis.aclose()
        gateway.services.redis = healthy_redis
    assert response.status_code == 503
    assert response.json() == {"status": "down", "down": ["redis"]}


async def test_healthz_is_degraded_but_200_while_only_postgres_is_down(gateway: Gateway) -> None:
    class Unreachable:
        async def fetchval(self, query: str) -> None:
            raise ConnectionRefusedError("PostgreSQL is down")

    healthy_pool = gateway.services.pool
    gateway.services.pool = Unreachable()  # type: ignore[assignment]
    try:
        response = await gateway.http.get("/healthz")
    finally:
        gateway.services.pool = healthy_pool
    # Publishing still works: the load balancer must keep this gateway.
    assert response.status_code == 200
    assert response.json() == {"status": "degraded", "down": ["postgres"]}


async def test_auth_while_the_database_is_down_asks_to_retry_later(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def database_down(token: str) -> None:
        raise ConnectionRefusedError("PostgreSQL is down")

    monkeypatch.setattr(gateway.services.accounts, "authenticate", database_down)
    assert await refused_auth(gateway.ws, "any") == ("unavailable", CloseCode.TRY_AGAIN_LATER)


@pytest.mark.parametrize("where", ["decoding the frame", "checking the token", "registering the session"])
async def test_an_unexpected_fault_during_auth_answers_internal_and_closes_with_1013(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    """A bug of ours before the connection is authenticated: the client is told (an error
    frame, then 1013: retry later), not dropped without a close frame; the operator gets
    the traceback."""

    def fault(*args: object) -> None:
        raise RuntimeError("a bug")

    async def async_fault(*args: object) -> None:
        fault()

    token = await gateway.login("martin@demo.test")
    if where == "decoding the frame":
        monkeypatch.setattr(ServerProtocol, "receive", fault)
    elif where == "checking the token":
        monkeypatch.setattr(gateway.services.accounts, "authenticate", async_fault)
    else:
        monkeypatch.setattr(gateway.services.sessions, "add", fault)
    assert await refused_auth(gateway.ws, token) == ("internal", CloseCode.TRY_AGAIN_LATER)
    assert [r.getMessage() for r in caplog.records if r.exc_info] == ["auth failed"]


async def test_http_calls_while_the_database_is_down_are_503(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    async def database_down(token: str) -> None:
        raise ConnectionRefusedError("PostgreSQL is down")

    monkeypatch.setattr(gateway.services.accounts, "authenticate", database_down)
    response = await gateway.http.get("/api/me", headers=bearer("any"))
    assert (response.status_code, response.json()["code"]) == (503, "unavailable")
