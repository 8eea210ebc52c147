"""Paging back through a channel (`history`) and withdrawing a message (`withdraw`)."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from redis.asyncio import Redis

from realtime.channels import Channel
from realtime.client import Client, ReplyError
from realtime.settings import Settings
from tests.conftest import Gateway, persistence_worker, wait_for

pytestmark = pytest.mark.usefixtures("demo_families")


@pytest.fixture
def household(demo_families: dict[str, int]) -> str:
    return f"family:{demo_families['Famille Martin']}"


async def test_history_pages_back_through_redis_and_postgres(
    gateway: Gateway, household: str, settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        for n in range(1, 31):
            await staff.publish(household, f"m{n}")
    async with persistence_worker(settings, redis, pool):
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 30 FROM messages"))
    # Only the 10 newest stay in Redis: older pages come from Postgres.
    await redis.xtrim(gateway.services.keys.channel(Channel.parse(household)).history, maxlen=10)
    async with Client.connect(gateway.ws, await gateway.login("martin@demo.test")) as parent:
        pages = []
        before = 31
        while True:
            reply = await parent.request("history", channel=household, before=before, limit=12)
            seqs = [m["seq"] for m in reply["messages"]]
            pages.append(seqs)
            if not reply["more"]:
                break
            before = seqs[0]
        assert pages == [list(range(19, 31)), list(range(7, 19)), list(range(1, 7))]
        assert reply["messages"][0]["body"]["text"] == "m1"


async def test_history_needs_the_right_to_read_the_channel(gateway: Gateway, household: str) -> None:
    async with Client.connect(gateway.ws, await gateway.login("bernard@demo.test")) as stranger:
        with pytest.raises(ReplyError) as refused:
            await stranger.request("history", channel=household, before=10)
        assert refused.value.code == "forbidden"
        for bad in ({"before": 0}, {"before": 5, "limit": 101}, {"before": "5"}):
            with pytest.raises(ReplyError) as malformed:
                await stranger.request("history", channel=household, **bad)
            assert malformed.value.code == "bad_frame"


async def test_history_hides_what_the_viewer_may_not_see(gateway: Gateway, demo_families: dict[str, int]) -> None:
    emma = await gateway.services.pool.fetchval("SELECT id FROM children WHERE first_name = 'Emma'")
    await gateway.services.pool.execute("UPDATE guardianships SET consultation = false WHERE child_id = $1", emma)
    household = f"family:{demo_families['Famille Bernard']}"
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        about_emma = await staff.publish(household, "Emma", children=[emma])
        general = await staff.publish(household, "Tous")
        withdrawn = await staff.publish(household, "Erreur")
        await staff.request("withdraw", channel=household, id=withdrawn["id"])
        staff_view = await staff.request("history", channel=household, before=10)
    assert [(m["id"], m.get("withdrawn", False)) for m in staff_view["messages"]] == [
        (about_emma["id"], False),
        (general["id"], False),
        (withdrawn["id"], True),
    ]
    async with Client.connect(gateway.ws, await gateway.login("bernard@demo.test")) as parent:
        reply = await parent.request("history", channel=household, before=10)
    assert [m["id"] for m in reply["messages"]] == [general["id"]]


async def test_staff_withdraw_a_message_and_every_subscriber_is_told(
    gateway: Gateway, household: str, settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    async with (
        persistence_worker(settings, redis, pool),
        Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff,
        Client.connect(gateway.ws, await gateway.login("martin@demo.test")) as parent,
    ):
        await parent.subscribe(household)
        sent = await staff.publish(household, "Message envoyé par erreur")
        assert (await parent.next_push())["id"] == sent["id"]
        reply = await staff.request("withdraw", channel=household, id=sent["id"])
        assert reply["id"] == sent["id"]
        assert await parent.next_push() == {"op": "withdrawn", "channel": household, "id": sent["id"]}
        row = await wait_for(
            lambda: pool.fetchrow(
                "SELECT m.withdrawn_at, w.reason FROM messages m JOIN message_withdrawals w ON w.message_id = m.id"
                " WHERE m.id = $1 AND m.withdrawn_at IS NOT NULL",
                uuid.UUID(sent["id"]),
            )
        )
        assert row["reason"] == "moderation"


async def test_a_parent_withdraws_their_own_message_but_not_staffs(
    gateway: Gateway, household: str, demo_families: dict[str, int]
) -> None:
    async with (
        Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff,
        Client.connect(gateway.ws, await gateway.login("martin@demo.test")) as parent,
    ):
        mine = await parent.publish(household, "Oups")
        theirs = await staff.publish(household, "Note de la crèche")
        await parent.request("withdraw", channel=household, id=mine["id"])
        with pytest.raises(ReplyError) as refused:
            await parent.request("withdraw", channel=household, id=theirs["id"])
        assert refused.value.code == "forbidden"
        for unknown in (str(uuid.uuid4()), "not-a-uuid"):
            with pytest.raises(ReplyError) as missing:
                await staff.request("withdraw", channel=household, id=unknown)
            assert missing.value.code == "not_found"
        # A message id is only found in its own channel.
        with pytest.raises(ReplyError) as elsewhere:
            await staff.request("withdraw", channel=f"family:{demo_families['Famille Bernard']}", id=theirs["id"])
        assert elsewhere.value.code == "not_found"
