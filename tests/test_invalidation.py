"""A changed fact reaches live connections, on every gateway process, within a second:
rights removed → `unsubscribed`; account disabled, logout, password change → closed."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import ConnectionClosed

from realtime.client import Client, ReplyError
from realtime.errors import CloseCode
from realtime.invalidation import announce
from realtime.settings import Settings
from tests.conftest import DEMO_PASSWORD, Gateway, bearer, running_gateway

pytestmark = pytest.mark.usefixtures("demo_families")

WITHIN = 1.0  # seconds: the bound, as a bounded wait, not a benchmark


async def ids(gateway: Gateway) -> dict[str, int]:
    rows = await gateway.services.pool.fetch(
        "SELECT 'lea' AS k, id FROM children WHERE first_name = 'Léa'"
        " UNION ALL SELECT 'martin', id FROM users WHERE email = 'martin@demo.test'"
        " UNION ALL SELECT 'structure', id FROM structures"
    )
    return {r["k"]: r["id"] for r in rows}


async def closed_with(client: Client) -> tuple[int | None, str]:
    await asyncio.wait_for(client.ws.wait_closed(), WITHIN + 1)
    return client.ws.close_code, client.ws.close_reason or ""


@pytest.mark.rule("I4")
async def test_a_removed_guardianship_unsubscribes_within_a_second(gateway: Gateway) -> None:
    known = await ids(gateway)
    admin = await gateway.login("admin@demo.test")
    async with Client.connect(gateway.ws, await gateway.login("martin@demo.test")) as parent:
        await parent.subscribe(f"child:{known['lea']}")
        response = await gateway.http.delete(
            f"/api/structures/{known['structure']}/children/{known['lea']}/guardians/{known['martin']}",
            headers=bearer(admin),
        )
        assert response.status_code == 204, response.text
        frame = await parent.next_push(timeout=WITHIN)
        assert frame == {"op": "unsubscribed", "channel": f"child:{known['lea']}", "reason": "forbidden"}
        with pytest.raises(ReplyError) as refused:
            await parent.subscribe(f"child:{known['lea']}")
        assert refused.value.code == "forbidden"


@pytest.mark.rule("I4")
async def test_leaving_a_household_unsubscribes_from_its_channel(
    gateway: Gateway, demo_families: dict[str, int]
) -> None:
    known = await ids(gateway)
    household = demo_families["Famille Martin"]
    admin = await gateway.login("admin@demo.test")
    async with Client.connect(gateway.ws, await gateway.login("martin@demo.test")) as parent:
        await parent.subscribe(f"family:{household}")
        response = await gateway.http.delete(
            f"/api/structures/{known['structure']}/families/{household}/members/{known['martin']}",
            headers=bearer(admin),
        )
        assert response.status_code == 204, response.text
        frame = await parent.next_push(timeout=WITHIN)
        assert (frame["op"], frame["channel"]) == ("unsubscribed", f"family:{household}")


@pytest.mark.rule("I4", "I5")
async def test_consultation_withdrawn_stops_the_childs_content_live(
    gateway: Gateway, demo_families: dict[str, int]
) -> None:
    known = await ids(gateway)
    household = f"family:{demo_families['Famille Martin']}"
    admin = await gateway.login("admin@demo.test")
    async with (
        Client.connect(gateway.ws, await gateway.login("martin@demo.test")) as parent,
        Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff,
    ):
        await parent.subscribe(household)
        await parent.subscribe(f"child:{known['lea']}")
        response = await gateway.http.put(
            f"/api/structures/{known['structure']}/children/{known['lea']}/guardians/{known['martin']}",
            json={"parental_authority": True, "consultation": False, "may_post": True},
            headers=bearer(admin),
        )
        assert response.status_code in (200, 201), response.text
        frame = await parent.next_push(timeout=WITHIN)
        assert frame == {
            "op": "unsubscribed",
            "channel": f"child:{known['lea']}",
            "reason": "consultation_not_authorised",
        }
        await staff.publish(household, "Léa au jardin", children=[known["lea"]])
        general = await staff.publish(household, "Fermeture à 17h")
        assert (await parent.next_push())["id"] == general["id"]


@pytest.mark.rule("I3")
async def test_a_disabled_account_is_disconnected(gateway: Gateway) -> None:
    known = await ids(gateway)
    async with Client.connect(gateway.ws, await gateway.login("martin@demo.test")) as parent:
        await gateway.services.pool.execute("UPDATE users SET disabled_at = now() WHERE id = $1", known["martin"])
        await announce(gateway.services.redis, gateway.services.keys, users=[known["martin"]])
        assert await closed_with(parent) == (CloseCode.AUTH_FAILED, "account_disabled")


@pytest.mark.rule("I1")
async def test_logout_closes_that_sessions_sockets_only(gateway: Gateway) -> None:
    first = await gateway.login("martin@demo.test")
    second = await gateway.login("martin@demo.test")
    async with Client.connect(gateway.ws, first) as a, Client.connect(gateway.ws, second) as b:
        assert (await gateway.http.post("/api/logout", headers=bearer(first))).status_code == 204
        assert await closed_with(a) == (CloseCode.AUTH_FAILED, "session_revoked")
        # The other session stays open and usable.
        martin = await gateway.me(second)
        assert (await b.subscribe(f"user:{martin['user']['id']}"))["ok"] is True


@pytest.mark.rule("I2")
async def test_a_password_change_closes_the_other_sessions(gateway: Gateway) -> None:
    here = await gateway.login("martin@demo.test")
    elsewhere = await gateway.login("martin@demo.test")
    async with Client.connect(gateway.ws, here) as a, Client.connect(gateway.ws, elsewhere) as b:
        response = await gateway.http.post(
            "/api/password",
            json={"old_password": DEMO_PASSWORD, "new_password": "une toute nouvelle phrase"},
            headers=bearer(here),
        )
        assert response.status_code == 204
        assert await closed_with(b) == (CloseCode.AUTH_FAILED, "session_revoked")
        assert a.ws.close_code is None


@pytest.mark.rule("I4")
async def test_a_change_reaches_every_gateway_process(settings: Settings, demo_families: dict[str, int]) -> None:
    async with running_gateway(settings) as one, running_gateway(settings) as two:
        known = await ids(one)
        token = await one.login("martin@demo.test")
        admin = await one.login("admin@demo.test")
        async with Client.connect(one.ws, token) as on_one, Client.connect(two.ws, token) as on_two:
            for client in (on_one, on_two):
                await client.subscribe(f"child:{known['lea']}")
            response = await two.http.delete(
                f"/api/structures/{known['structure']}/children/{known['lea']}/guardians/{known['martin']}",
                headers=bearer(admin),
            )
            assert response.status_code == 204
            frames = await asyncio.gather(on_one.next_push(timeout=WITHIN), on_two.next_push(timeout=WITHIN))
            assert [f["op"] for f in frames] == ["unsubscribed", "unsubscribed"]


@pytest.mark.rule("I1")
async def test_a_revoked_token_cannot_keep_using_a_socket(gateway: Gateway) -> None:
    token = await gateway.login("martin@demo.test")
    async with Client.connect(gateway.ws, token) as parent:
        await gateway.http.post("/api/logout", headers=bearer(token))
        await closed_with(parent)
        with pytest.raises((ConnectionClosed, ConnectionError)):
            await parent.publish("family:1", "après la déconnexion")


@pytest.mark.rule("I3")
async def test_terms_no_longer_accepted_close_the_connection(gateway: Gateway) -> None:
    known = await ids(gateway)
    async with Client.connect(gateway.ws, await gateway.login("martin@demo.test")) as parent:
        await gateway.services.pool.execute("DELETE FROM terms_acceptances WHERE user_id = $1", known["martin"])
        await announce(gateway.services.redis, gateway.services.keys, users=[known["martin"]])
        # The terms gate's own close code, as at `auth`.
        assert await closed_with(parent) == (CloseCode.TERMS_NOT_ACCEPTED, "terms_not_accepted")


@pytest.mark.rule("I3")
async def test_a_deleted_account_is_disconnected(gateway: Gateway) -> None:
    known = await ids(gateway)
    async with Client.connect(gateway.ws, await gateway.login("martin@demo.test")) as parent:
        await gateway.services.pool.execute("DELETE FROM users WHERE id = $1", known["martin"])
        await announce(gateway.services.redis, gateway.services.keys, users=[known["martin"]])
        assert await closed_with(parent) == (CloseCode.AUTH_FAILED, "invalid_token")


@pytest.mark.rule("I3", "I4")
async def test_a_change_naming_only_a_channel_rechecks_its_subscribers(
    gateway: Gateway, demo_families: dict[str, int]
) -> None:
    known = await ids(gateway)
    household = demo_families["Famille Martin"]
    async with Client.connect(gateway.ws, await gateway.login("martin@demo.test")) as parent:
        await parent.subscribe(f"family:{household}")
        await parent.subscribe(f"child:{known['lea']}")
        await gateway.services.pool.execute(
            "DELETE FROM family_members WHERE family_id = $1 AND user_id = $2", household, known["martin"]
        )
        # The user is not named: the connection is re-checked because it follows the household.
        await announce(gateway.services.redis, gateway.services.keys, families=[household])
        frame = await parent.next_push(timeout=WITHIN)
        assert frame == {"op": "unsubscribed", "channel": f"family:{household}", "reason": "forbidden"}
        with pytest.raises(TimeoutError):
            await parent.next_push(timeout=0.3)
