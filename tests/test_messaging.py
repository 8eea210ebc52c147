"""The whole path of a message on real servers: WebSocket → Redis → live delivery and Postgres."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from redis.asyncio import Redis

from realtime.channels import Channel
from realtime.client import Client, ReplyError
from realtime.codec import MSGPACK_SUBPROTOCOL
from realtime.settings import Settings
from tests.conftest import Gateway, persistence_worker, rewind, wait_for

pytestmark = pytest.mark.usefixtures("demo_families")


@pytest.fixture
def martin_family(demo_families: dict[str, int]) -> str:
    return f"family:{demo_families['Famille Martin']}"


@pytest.mark.rule("V4")
async def test_guardian_receives_live_what_staff_sends_and_it_is_persisted(
    gateway: Gateway, martin_family: str, settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    staff_token = await gateway.login("staff@demo.test")
    parent_token = await gateway.login("martin@demo.test")
    async with (
        persistence_worker(settings, redis, pool),
        Client.connect(gateway.ws, parent_token) as parent,
        Client.connect(gateway.ws, staff_token) as staff,
    ):
        subscribed = await parent.subscribe(martin_family)
        assert subscribed["channel"] == martin_family
        ack = await staff.publish(martin_family, "Léa a bien mangé ce midi 🍲")
        push = await parent.next_push()
        assert push["op"] == "message"
        assert push["channel"] == martin_family
        assert (push["seq"], push["id"]) == (ack["seq"], ack["id"])
        assert push["body"] == {"kind": "text", "text": "Léa a bien mangé ce midi 🍲"}
        assert push["author"]["name"] == "Sophie Éducatrice"
        assert push["at"].endswith("Z")
        row = await wait_for(
            lambda: pool.fetchrow(
                "SELECT channel, seq, body, author_name FROM messages WHERE id = $1", uuid.UUID(ack["id"])
            )
        )
        assert dict(row) == {
            "channel": martin_family,
            "seq": ack["seq"],
            "body": push["body"],
            "author_name": "Sophie Éducatrice",
        }


@pytest.mark.rule("P2")
async def test_parent_answers_staff_when_the_structure_allows(gateway: Gateway, martin_family: str) -> None:
    async with (
        Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff,
        Client.connect(gateway.ws, await gateway.login("martin@demo.test")) as parent,
    ):
        await staff.subscribe(martin_family)
        ack = await parent.publish(martin_family, "Merci !")
        push = await staff.next_push()
        assert (push["seq"], push["author"]["name"], push["body"]["text"]) == (
            ack["seq"],
            "Julie Martin",
            "Merci !",
        )


@pytest.mark.rule("U1", "S12", "P6")
async def test_guardian_of_another_family_is_refused(gateway: Gateway, demo_families: dict[str, int]) -> None:
    martin = f"family:{demo_families['Famille Martin']}"
    async with Client.connect(gateway.ws, await gateway.login("bernard@demo.test")) as bernard:
        for attempt in (bernard.subscribe(martin), bernard.publish(martin, "intrusion")):
            with pytest.raises(ReplyError) as refused:
                await attempt
            assert refused.value.code == "forbidden"
        # Ids that do not exist are refused the same way, so ids cannot be probed.
        with pytest.raises(ReplyError) as unknown:
            await bernard.subscribe("family:999999")
        assert unknown.value.code == "forbidden"
        # Bébés is not his children's group; user:1 is the admin's; structure 99 is not his.
        for channel in ("group:1", "user:1", "structure:99"):
            with pytest.raises(ReplyError) as other_kind:
                await bernard.subscribe(channel)
            assert other_kind.value.code == "forbidden"


@pytest.mark.rule("P3")
async def test_consultation_only_guardian_reads_but_may_not_post(
    gateway: Gateway, demo_families: dict[str, int]
) -> None:
    bernard_family = f"family:{demo_families['Famille Bernard']}"
    async with Client.connect(gateway.ws, await gateway.login("bernard@demo.test")) as bernard:
        await bernard.subscribe(bernard_family)
        with pytest.raises(ReplyError) as refused:
            await bernard.publish(bernard_family, "bonjour")
        assert refused.value.code == "posting_not_authorised"


@pytest.mark.rule("S7", "S9", "P4")
async def test_child_channel_is_for_staff_and_the_childs_guardians(gateway: Gateway) -> None:
    martin_token = await gateway.login("martin@demo.test")
    lea = (await gateway.me(martin_token))["children"][0]["id"]
    async with (
        Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff,
        Client.connect(gateway.ws, martin_token) as parent,
        Client.connect(gateway.ws, await gateway.login("dupont.pere@demo.test")) as stranger,
    ):
        await parent.subscribe(f"child:{lea}")
        ack = await staff.publish(f"child:{lea}", "Sieste de 2 heures")
        assert (await parent.next_push())["seq"] == ack["seq"]
        with pytest.raises(ReplyError) as refused:
            await parent.publish(f"child:{lea}", "I am not staff")
        assert refused.value.code == "forbidden"
        with pytest.raises(ReplyError) as stranger_refused:
            await stranger.subscribe(f"child:{lea}")
        assert stranger_refused.value.code == "forbidden"


async def test_reconnect_with_since_receives_exactly_the_missed_messages(gateway: Gateway, martin_family: str) -> None:
    parent_token = await gateway.login("martin@demo.test")
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        async with Client.connect(gateway.ws, parent_token) as parent:
            await parent.subscribe(martin_family)
            first = await staff.publish(martin_family, "avant la coupure")
            seen = (await parent.next_push())["seq"]
            assert seen == first["seq"]
        missed = [(await staff.publish(martin_family, f"pendant la coupure {i}"))["seq"] for i in range(5)]
        async with Client.connect(gateway.ws, parent_token) as parent:
            reply = await parent.subscribe(martin_family, since=seen)
            assert reply["recovered"] is True
            assert reply["seq"] == missed[-1]
            backlog = await parent.pushes_until(5)
            assert [m["seq"] for m in backlog] == missed
            assert [m["body"]["text"] for m in backlog] == [f"pendant la coupure {i}" for i in range(5)]
            live = await staff.publish(martin_family, "après")
            assert (await parent.next_push())["seq"] == live["seq"]
            with pytest.raises(TimeoutError):
                await parent.next_push(timeout=0.3)


async def test_resume_is_gap_free_while_messages_keep_coming(gateway: Gateway, martin_family: str) -> None:
    """Subscribing with `since` while staff publish concurrently: every seq once, in order."""
    parent_token = await gateway.login("martin@demo.test")
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        first = [(await staff.publish(martin_family, f"m{i}"))["seq"] for i in range(20)]

        async def keep_publishing() -> list[int]:
            return [(await staff.publish(martin_family, f"n{i}"))["seq"] for i in range(40)]

        async with Client.connect(gateway.ws, parent_token) as parent:
            publishing = asyncio.create_task(keep_publishing())
            await asyncio.sleep(0)
            await parent.subscribe(martin_family, since=first[4])
            later = await publishing
            expected = first[5:] + later
            received = [m["seq"] for m in await parent.pushes_until(len(expected))]
            assert received == expected


async def test_resume_reads_postgres_beyond_the_redis_history(
    gateway: Gateway, martin_family: str, settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    keys = gateway.services.keys
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        seqs = [(await staff.publish(martin_family, f"m{i}"))["seq"] for i in range(12)]
    async with persistence_worker(settings, redis, pool):
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 12 FROM messages"))
    await redis.xtrim(keys.channel(Channel.parse(martin_family)).history, maxlen=3)
    async with Client.connect(gateway.ws, await gateway.login("martin@demo.test")) as parent:
        reply = await parent.subscribe(martin_family, since=2)
        assert reply["recovered"] is True
        assert [m["seq"] for m in await parent.pushes_until(10)] == seqs[2:]


async def test_a_retried_publish_is_stored_once(
    gateway: Gateway, martin_family: str, settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    msg_id = str(uuid.uuid4())
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        first = await staff.publish(martin_family, "une seule fois", msg_id=msg_id)
    # The ack was "lost": the client reconnects and sends the same frame again.
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        again = await staff.publish(martin_family, "une seule fois", msg_id=msg_id)
        other = await staff.publish(martin_family, "une autre")
    assert (again["seq"], again["id"]) == (first["seq"], first["id"])
    assert other["seq"] == first["seq"] + 1
    async with persistence_worker(settings, redis, pool):
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 2 FROM messages"))
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE client_msg_id = $1", msg_id) == 1


async def test_the_same_frames_work_in_msgpack(gateway: Gateway, martin_family: str) -> None:
    async with (
        Client.connect(gateway.ws, await gateway.login("martin@demo.test"), subprotocol=MSGPACK_SUBPROTOCOL) as parent,
        Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff,
    ):
        await parent.subscribe(martin_family)
        ack = await staff.publish(martin_family, "en binaire")
        push = await parent.next_push()
        assert (push["seq"], push["body"]["text"]) == (ack["seq"], "en binaire")


async def test_a_message_acknowledged_under_a_seq_postgres_holds_reaches_everyone_renumbered(
    gateway: Gateway, martin_family: str, settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    """Redis came back without its latest writes (a power cut): its sequence went back, so a
    message is acknowledged under a seq PostgreSQL holds for another. The worker publishes it
    again above PostgreSQL under a new epoch; a follower still connected is closed with 4000
    at once, resumes, is told to reload, and then has every message, that one included."""
    token = await gateway.login("martin@demo.test")
    async with (
        persistence_worker(settings, redis, pool),
        Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff,
    ):
        first = [await staff.publish(martin_family, f"avant {n}") for n in range(2)]
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 2 FROM messages WHERE channel = $1", martin_family))
        async with Client.connect(gateway.ws, token) as parent:
            before = await parent.subscribe(martin_family, since=0)
            assert [(await parent.next_push())["seq"] for _ in first] == [1, 2]
            # What Redis restarts from: its state after the first message.
            ck = gateway.services.keys.channel(Channel.parse(martin_family))
            await rewind(redis, ck, 1)
            msg_id = str(uuid.uuid4())
            void = await staff.publish(martin_family, "pendant", msg_id=msg_id)
            assert void["seq"] == 2
            await asyncio.wait_for(parent.ws.wait_closed(), 20)
            assert (parent.ws.close_code, parent.ws.close_reason) == (4000, "channel renumbered: resume")
        async with Client.connect(gateway.ws, token) as parent:
            resumed = await parent.subscribe(martin_family, since=2, epoch=before["epoch"])
            assert resumed["epoch"] != before["epoch"]
            assert (resumed["recovered"], resumed["seq"]) == (False, 3)
            await parent.request("unsubscribe", channel=martin_family)
            await parent.subscribe(martin_family, since=0)
            pushes = [await parent.next_push() for _ in range(3)]
            assert [(p["seq"], p["body"]["text"]) for p in pushes] == [(1, "avant 0"), (2, "avant 1"), (3, "pendant")]
            assert pushes[2]["id"] == void["id"]
        retried = await staff.publish(martin_family, "pendant", msg_id=msg_id)
        assert (retried["seq"], retried["id"]) == (3, void["id"])
        stored = await wait_for(lambda: pool.fetchval("SELECT seq FROM messages WHERE id = $1", uuid.UUID(void["id"])))
        assert stored == 3


async def test_a_resume_across_an_epoch_change_asks_the_client_to_reload(
    gateway: Gateway, martin_family: str, redis: Redis
) -> None:
    """Redis lost the channel: its sequence is re-seeded under a new epoch, and a client
    resuming with the old epoch is told its position means nothing (recovered: false)."""
    token = await gateway.login("martin@demo.test")
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        await staff.publish(martin_family, "avant")
        async with Client.connect(gateway.ws, token) as parent:
            before = await parent.subscribe(martin_family, since=0)
            await parent.next_push()
            # Same epoch: a normal resume.
        async with Client.connect(gateway.ws, token) as parent:
            same = await parent.subscribe(martin_family, since=1, epoch=before["epoch"])
            assert (same["recovered"], same["epoch"]) == (True, before["epoch"])
        ck = gateway.services.keys.channel(Channel.parse(martin_family))
        await redis.delete(ck.seq, ck.epoch, ck.history)
        after = await staff.publish(martin_family, "après la perte de Redis")
    async with Client.connect(gateway.ws, token) as parent:
        reply = await parent.subscribe(martin_family, since=1, epoch=before["epoch"])
        assert reply["epoch"] != before["epoch"]
        assert reply["recovered"] is False
        assert reply["seq"] == after["seq"]
        with pytest.raises(TimeoutError):
            await parent.next_push(timeout=0.3)
