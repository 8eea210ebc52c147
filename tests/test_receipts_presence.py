"""Read receipts, typing indicators and presence."""

from __future__ import annotations

import time
from typing import Any

import pytest
from redis.asyncio import Redis

from realtime.channels import Channel
from realtime.client import Client, ReplyError
from tests.conftest import Gateway

pytestmark = pytest.mark.usefixtures("demo_families")


async def next_of(client: Client, op: str, by: str | None = None) -> dict[str, Any]:
    """The next push of this kind (by this user): others, like presence, may come first, and
    a client also receives its own events."""
    while True:
        frame = await client.next_push(timeout=5)
        if frame["op"] == op and (by is None or frame["user"]["name"] == by):
            return frame


@pytest.mark.rule("R1")
async def test_in_a_household_each_side_sees_the_others_read_position(
    gateway: Gateway, demo_families: dict[str, int]
) -> None:
    household = f"family:{demo_families['Famille Martin']}"
    async with (
        Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff,
        Client.connect(gateway.ws, await gateway.login("martin@demo.test")) as parent,
    ):
        await staff.subscribe(household)
        await parent.subscribe(household)
        sent = await staff.publish(household, "Bonne journée")
        await parent.request("read", channel=household, seq=sent["seq"])
        seen = await next_of(staff, "read")
        assert (seen["user"]["name"], seen["seq"]) == ("Julie Martin", sent["seq"])
        await staff.request("read", channel=household, seq=sent["seq"])
        assert (await next_of(parent, "read", by="Sophie Éducatrice"))["seq"] == sent["seq"]
        receipts = (await parent.request("receipts", channel=household))["receipts"]
        assert {(r["user"]["name"], r["seq"]) for r in receipts} == {
            ("Julie Martin", sent["seq"]),
            ("Sophie Éducatrice", sent["seq"]),
        }
        # A position never goes back.
        await parent.request("read", channel=household, seq=1)
        receipts = (await staff.request("receipts", channel=household))["receipts"]
        assert ("Julie Martin", sent["seq"]) in {(r["user"]["name"], r["seq"]) for r in receipts}


@pytest.mark.rule("R1")
async def test_who_read_an_announcement_is_for_staff_only(gateway: Gateway) -> None:
    hugo = await gateway.services.pool.fetchval("SELECT id FROM children WHERE first_name = 'Hugo'")
    grands = f"group:{await gateway.services.pool.fetchval('SELECT group_id FROM children WHERE id = $1', hugo)}"
    async with (
        Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff,
        Client.connect(gateway.ws, await gateway.login("bernard@demo.test")) as bernard,
        Client.connect(gateway.ws, await gateway.login("dupont.mere@demo.test")) as other_parent,
    ):
        for client in (staff, bernard, other_parent):
            await client.subscribe(grands)
        sent = await staff.request(
            "publish",
            channel=grands,
            msg_id="announce-0001",
            body={"kind": "announcement", "title": "Photos de classe", "text": "Mardi"},
        )
        await bernard.next_push()
        await other_parent.next_push()
        await bernard.request("read", channel=grands, seq=sent["seq"])
        assert (await next_of(staff, "read"))["user"]["name"] == "Paul Bernard"
        with pytest.raises(TimeoutError):
            await other_parent.next_push(timeout=0.3)
        with pytest.raises(ReplyError) as refused:
            await other_parent.request("receipts", channel=grands)
        assert refused.value.code == "forbidden"
        receipts = (await staff.request("receipts", channel=grands))["receipts"]
        assert [r["user"]["name"] for r in receipts] == ["Paul Bernard"]


@pytest.mark.rule("R2")
async def test_typing_is_shown_in_household_conversations_only(gateway: Gateway, demo_families: dict[str, int]) -> None:
    household = f"family:{demo_families['Famille Martin']}"
    async with (
        Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff,
        Client.connect(gateway.ws, await gateway.login("martin@demo.test")) as parent,
        Client.connect(gateway.ws, await gateway.login("bernard@demo.test")) as bernard,
    ):
        await staff.subscribe(household)
        await parent.request("typing", channel=household)
        typing = await next_of(staff, "typing")
        assert (typing["channel"], typing["user"]["name"]) == (household, "Julie Martin")
        lea = await gateway.services.pool.fetchval("SELECT id FROM children WHERE first_name = 'Léa'")
        with pytest.raises(ReplyError) as not_household:
            await staff.request("typing", channel=f"child:{lea}")
        assert not_household.value.code == "kind_not_allowed"
        with pytest.raises(ReplyError) as may_not_post:
            await bernard.request("typing", channel=f"family:{demo_families['Famille Bernard']}")
        assert may_not_post.value.code == "posting_not_authorised"
        with pytest.raises(ReplyError) as stranger:
            await bernard.request("typing", channel=household)
        assert stranger.value.code == "forbidden"


@pytest.mark.rule("R3")
async def test_presence_in_a_household_comes_and_goes(
    gateway: Gateway, demo_families: dict[str, int], redis: Redis
) -> None:
    household = f"family:{demo_families['Famille Martin']}"
    martin = await gateway.login("martin@demo.test")
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        await staff.subscribe(household, presence=True)
        async with Client.connect(gateway.ws, martin) as parent:
            await parent.subscribe(household)
            online = await next_of(staff, "presence", by="Julie Martin")
            assert online["online"] is True
            users = (await staff.request("presence", channel=household))["users"]
            assert {u["name"] for u in users} == {"Julie Martin", "Sophie Éducatrice"}
        offline = await next_of(staff, "presence", by="Julie Martin")
        assert offline["online"] is False
        # A dead gateway's entries expire: this one expired a second ago.
        key = gateway.services.keys.channel(Channel.parse(household)).presence
        await redis.zadd(key, {"999:Ghost": time.time() - 1})
        users = (await staff.request("presence", channel=household))["users"]
        assert [u["name"] for u in users] == ["Sophie Éducatrice"]
        with pytest.raises(ReplyError) as refused:
            await staff.request("presence", channel="structure:1")
        assert refused.value.code == "kind_not_allowed"


async def test_a_new_connection_learns_its_own_read_position_when_it_subscribes(gateway: Gateway) -> None:
    group_id = await gateway.services.pool.fetchval("SELECT id FROM groups WHERE name = 'Grands'")
    grands = f"group:{group_id}"
    parent_token = await gateway.login("bernard@demo.test")
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        sent = [await staff.publish(grands, f"Annonce {n}") for n in range(3)]
    async with Client.connect(gateway.ws, parent_token) as parent:
        assert (await parent.subscribe(grands))["read"] == 0
        # Guardians may not read the channel's receipts, only learn their own position.
        await parent.request("read", channel=grands, seq=sent[1]["seq"])
    async with Client.connect(gateway.ws, parent_token) as again:
        assert (await again.subscribe(grands))["read"] == sent[1]["seq"]
    # A resume knows its position already: no query is spent on it.
    async with Client.connect(gateway.ws, parent_token) as resumed:
        assert "read" not in await resumed.subscribe(grands, since=sent[2]["seq"])
