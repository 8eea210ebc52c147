"""Image rights end to end: tagging needs every holder's consent; revoking withdraws what was
published, from guardians' view, in history and live; consultation hides a child's content."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from realtime.bus import Published
from realtime.client import Client, ReplyError
from realtime.settings import Settings
from tests.conftest import Gateway, bearer, persistence_worker, wait_for

pytestmark = pytest.mark.usefixtures("demo_families")


async def child_id(gateway: Gateway, first_name: str) -> int:
    value = await gateway.services.pool.fetchval("SELECT id FROM children WHERE first_name = $1", first_name)
    assert isinstance(value, int)
    return value


async def group_of(gateway: Gateway, child: int) -> str:
    return f"group:{await gateway.services.pool.fetchval('SELECT group_id FROM children WHERE id = $1', child)}"


@pytest.mark.rule("T2", "T3", "H5")
async def test_hugo_cannot_be_tagged_until_both_parents_consent(gateway: Gateway) -> None:
    hugo = await child_id(gateway, "Hugo")
    grands = await group_of(gateway, hugo)
    father = await gateway.login("dupont.pere@demo.test")
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        with pytest.raises(ReplyError) as refused:
            await staff.request(
                "publish",
                channel=grands,
                msg_id="photo-hugo-1",
                body={"kind": "text", "text": "Hugo au parc"},
                children=[hugo],
            )
        assert refused.value.code == "consent_missing"
        assert "Hugo Dupont" in refused.value.message
        assert "Marc Dupont" in refused.value.message
        assert "Anne Dupont" not in refused.value.message
        state = (await gateway.http.get(f"/api/children/{hugo}/consent", headers=bearer(father))).json()
        assert state["complete"] is False
        assert {h["name"]: h["consented"] for h in state["holders"]} == {"Anne Dupont": True, "Marc Dupont": False}
        assert "Marc Dupont" in state["declaration"]
        assert "Crèche Les Petits Pas" in state["declaration"]
        signed = await gateway.http.post(
            f"/api/children/{hugo}/consent", json={"declare": True}, headers=bearer(father)
        )
        assert signed.status_code == 201, signed.text
        assert signed.json()["complete"] is True
        ack = await staff.publish(grands, "Hugo au parc", children=[hugo])
        assert ack["seq"] >= 1


@pytest.mark.rule("T3")
async def test_the_refusal_details_say_whose_consent_is_missing(gateway: Gateway) -> None:
    hugo = await child_id(gateway, "Hugo")
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        frame = {
            "op": "publish",
            "rid": "r1",
            "channel": await group_of(gateway, hugo),
            "msg_id": "photo-hugo-2",
            "body": {"kind": "text", "text": "x"},
            "children": [hugo],
        }
        await staff.send_raw(json.dumps(frame))
        reply = await staff.next_push()
    father = await gateway.services.pool.fetchval("SELECT id FROM users WHERE email = 'dupont.pere@demo.test'")
    assert reply["error"]["details"] == [
        {"child": {"id": hugo, "name": "Hugo Dupont"}, "missing": [{"id": father, "name": "Marc Dupont"}]}
    ]


@pytest.mark.rule("T1")
async def test_a_child_outside_the_channels_circle_cannot_be_tagged(
    gateway: Gateway, demo_families: dict[str, int]
) -> None:
    lea = await child_id(gateway, "Léa")
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        for channel, tagged in (
            (f"family:{demo_families['Famille Bernard']}", [lea]),
            ("group:2", [lea]),
            (f"child:{lea}", [999999]),
        ):
            with pytest.raises(ReplyError) as refused:
                await staff.publish(channel, "photo", children=tagged)
            assert refused.value.code == "forbidden", channel


@pytest.mark.rule("W1", "V1", "V2")
async def test_revoking_consent_withdraws_the_childs_content_from_guardians(
    gateway: Gateway, demo_families: dict[str, int], settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    lea = await child_id(gateway, "Léa")
    household = f"family:{demo_families['Famille Martin']}"
    martin = await gateway.login("martin@demo.test")
    async with (
        persistence_worker(settings, redis, pool),
        Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff,
        Client.connect(gateway.ws, martin) as parent,
    ):
        await parent.subscribe(household)
        await staff.subscribe(household)
        photo = await staff.publish(household, "Léa peint", children=[lea])
        text = await staff.publish(household, "Réunion jeudi")
        assert [m["id"] for m in await parent.pushes_until(2)] == [photo["id"], text["id"]]
        await staff.pushes_until(2)
        # Persisted before the revocation: the sweep finds it in Postgres too.
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 2 FROM messages"))
        revoked = await gateway.http.delete(f"/api/children/{lea}/consent", headers=bearer(martin))
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["withdrawn"] == 1
        assert revoked.json()["complete"] is False
        withdrawn = {"op": "withdrawn", "channel": household, "id": photo["id"]}
        assert await parent.next_push() == withdrawn
        assert await staff.next_push() == withdrawn
        with pytest.raises(ReplyError) as refused:
            await staff.publish(household, "Léa encore", children=[lea])
        assert refused.value.code == "consent_missing"
    await wait_for(
        lambda: pool.fetchval("SELECT withdrawn_at IS NOT NULL FROM messages WHERE id = $1", uuid.UUID(photo["id"]))
    )
    # History: the guardian no longer sees it; staff see it, marked withdrawn.
    async with Client.connect(gateway.ws, martin) as parent:
        await parent.subscribe(household, since=0)
        assert [m["id"] for m in await parent.pushes_until(1)] == [text["id"]]
        with pytest.raises(TimeoutError):
            await parent.next_push(timeout=0.3)
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        await staff.subscribe(household, since=0)
        seen = await staff.pushes_until(2)
        assert [(m["id"], m.get("withdrawn", False)) for m in seen] == [(photo["id"], True), (text["id"], False)]


@pytest.mark.rule("W1", "V2")
async def test_a_withdrawal_not_yet_persisted_is_still_honoured_from_redis(
    gateway: Gateway, demo_families: dict[str, int]
) -> None:
    """No worker runs here: the message and its withdrawal live only in Redis."""
    lea = await child_id(gateway, "Léa")
    martin = await gateway.login("martin@demo.test")
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        photo = await staff.publish(f"child:{lea}", "Léa dort", children=[lea])
    response = await gateway.http.delete(f"/api/children/{lea}/consent", headers=bearer(martin))
    assert response.json()["withdrawn"] == 1
    async with Client.connect(gateway.ws, martin) as parent:
        reply = await parent.subscribe(f"child:{lea}", since=0)
        assert reply["seq"] == photo["seq"]
        with pytest.raises(TimeoutError):
            await parent.next_push(timeout=0.3)


async def test_consent_history_is_kept(gateway: Gateway) -> None:
    lea = await child_id(gateway, "Léa")
    martin = await gateway.login("martin@demo.test")
    await gateway.http.delete(f"/api/children/{lea}/consent", headers=bearer(martin))
    await gateway.http.post(f"/api/children/{lea}/consent", json={"declare": True}, headers=bearer(martin))
    rows = await gateway.services.pool.fetch(
        "SELECT granted_at, revoked_at, terms_version, declaration FROM consents WHERE child_id = $1 ORDER BY id", lea
    )
    assert len(rows) == 2
    assert rows[0]["revoked_at"] is not None
    assert rows[1]["revoked_at"] is None
    assert rows[1]["terms_version"] == 1
    assert "Julie Martin" in rows[1]["declaration"]
    actions = await gateway.services.pool.fetch(
        "SELECT action FROM audit_log WHERE subject_id = $1 ORDER BY id", str(lea)
    )
    assert [a["action"] for a in actions] == ["consent.revoke", "consent.grant"]


@pytest.mark.rule("H4", "H7")
@pytest.mark.parametrize(
    ("email", "child", "body", "status", "code"),
    [
        ("dupont.mere@demo.test", "Léa", {"declare": True}, 404, "not_found"),  # not her child
        ("staff@demo.test", "Léa", {"declare": True}, 404, "not_found"),  # staff do not sign for parents
        ("martin@demo.test", "Léa", {}, 403, "declaration_required"),
        ("martin@demo.test", "Léa", {"declare": "yes"}, 403, "declaration_required"),
    ],
)
async def test_only_a_holder_of_parental_authority_signs(
    gateway: Gateway, email: str, child: str, body: dict[str, Any], status: int, code: str
) -> None:
    token = await gateway.login(email)
    response = await gateway.http.post(
        f"/api/children/{await child_id(gateway, child)}/consent", json=body, headers=bearer(token)
    )
    assert (response.status_code, response.json()["code"]) == (status, code)


@pytest.mark.rule("H6", "T2")
async def test_a_guardian_without_parental_authority_cannot_sign(gateway: Gateway) -> None:
    hugo = await child_id(gateway, "Hugo")
    await gateway.services.pool.execute(
        "UPDATE guardianships SET parental_authority = false WHERE child_id = $1"
        " AND user_id = (SELECT id FROM users WHERE email = 'dupont.pere@demo.test')",
        hugo,
    )
    token = await gateway.login("dupont.pere@demo.test")
    response = await gateway.http.post(f"/api/children/{hugo}/consent", json={"declare": True}, headers=bearer(token))
    assert (response.status_code, response.json()["code"]) == (403, "forbidden")
    # The mother is now the only holder: her consent alone is complete.
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        await staff.publish(await group_of(gateway, hugo), "Hugo au toboggan", children=[hugo])


@pytest.mark.rule("V3", "S8")
async def test_a_guardian_without_consultation_receives_none_of_that_childs_content(
    gateway: Gateway, demo_families: dict[str, int]
) -> None:
    emma, louis = await child_id(gateway, "Emma"), await child_id(gateway, "Louis")
    await gateway.services.pool.execute("UPDATE guardianships SET consultation = false WHERE child_id = $1", emma)
    household = f"family:{demo_families['Famille Bernard']}"
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        before = await staff.publish(household, "Emma chante", children=[emma])
        async with Client.connect(gateway.ws, await gateway.login("bernard@demo.test")) as bernard:
            with pytest.raises(ReplyError) as refused:
                await bernard.subscribe(f"child:{emma}")
            assert refused.value.code == "consultation_not_authorised"
            await bernard.subscribe(household, since=0)
            about_louis = await staff.publish(household, "Louis danse", children=[louis])
            await staff.publish(household, "Emma et Louis", children=[emma, louis])
            general = await staff.publish(household, "Sortie demain")
            received = [m["id"] for m in await bernard.pushes_until(2)]
            assert received == [about_louis["id"], general["id"]]
            assert before["id"] not in received
            with pytest.raises(TimeoutError):
                await bernard.next_push(timeout=0.3)
        await asyncio.sleep(0)


@pytest.mark.rule("T5", "V1", "V2")
async def test_a_consent_revoked_while_publishing_withdraws_the_message(
    gateway: Gateway, settings: Settings, redis: Redis, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The revocation lands after the publish's check (T2) and before its re-read right after
    the write, and no sweep of its own has run: the publish withdraws the message itself."""
    lea = await child_id(gateway, "Léa")
    channel = f"child:{lea}"
    bus = gateway.services.bus
    original = bus.publish

    async def racing(*args: Any, **kwargs: Any) -> Published:
        published = await original(*args, **kwargs)
        await pool.execute("UPDATE consents SET revoked_at = now() WHERE child_id = $1 AND revoked_at IS NULL", lea)
        return published

    monkeypatch.setattr(bus, "publish", racing)
    staff_token, martin = await gateway.login("staff@demo.test"), await gateway.login("martin@demo.test")
    async with (
        persistence_worker(settings, redis, pool),
        Client.connect(gateway.ws, staff_token) as observer,
        Client.connect(gateway.ws, martin) as parent,
        Client.connect(gateway.ws, staff_token) as publisher,
    ):
        await observer.subscribe(channel)
        await parent.subscribe(channel)
        frame = {
            "op": "publish",
            "rid": "r1",
            "channel": channel,
            "msg_id": "photo-lea-race",
            "body": {"kind": "text", "text": "Léa à la pataugeoire"},
            "children": [lea],
        }
        await publisher.send_raw(json.dumps(frame))
        reply = await publisher.next_push()
        assert reply["error"]["code"] == "consent_missing"
        assert "details" not in reply["error"]
        message = await observer.next_push()
        assert message["op"] == "message"
        withdrawn = {"op": "withdrawn", "channel": channel, "id": message["id"]}
        assert await observer.next_push() == withdrawn
        # The guardian got it live before the withdrawal: the withdrawn frame tells them to drop it.
        assert (await parent.next_push())["id"] == message["id"]
        assert await parent.next_push() == withdrawn
        reason = await wait_for(
            lambda: pool.fetchval(
                "SELECT reason FROM message_withdrawals WHERE message_id = $1", uuid.UUID(message["id"])
            )
        )
        assert reason == "consent_revoked"
    async with Client.connect(gateway.ws, staff_token) as staff:
        await staff.subscribe(channel, since=0)
        [seen] = await staff.pushes_until(1)
        assert (seen["id"], seen.get("withdrawn")) == (message["id"], True)
    async with Client.connect(gateway.ws, martin) as parent:
        await parent.subscribe(channel, since=0)
        with pytest.raises(TimeoutError):
            await parent.next_push(timeout=0.3)


@pytest.mark.rule("W1", "V2")
async def test_revoking_withdraws_from_every_channel_of_the_childs_circle(
    gateway: Gateway, demo_families: dict[str, int]
) -> None:
    lea = await child_id(gateway, "Léa")
    structure = await gateway.services.pool.fetchval("SELECT structure_id FROM children WHERE id = $1", lea)
    circle = [
        f"child:{lea}",
        await group_of(gateway, lea),
        f"family:{demo_families['Famille Martin']}",
        f"structure:{structure}",
    ]
    martin = await gateway.login("martin@demo.test")
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        photos = {c: (await staff.publish(c, "Léa au jardin", children=[lea]))["id"] for c in circle}
        others = {c: (await staff.publish(c, "Fermeture à 17h"))["id"] for c in circle}
    async with Client.connect(gateway.ws, martin) as parent:
        for channel in circle:
            await parent.subscribe(channel)
        revoked = await gateway.http.delete(f"/api/children/{lea}/consent", headers=bearer(martin))
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["withdrawn"] == len(circle)
        frames = [await parent.next_push() for _ in circle]
        assert sorted((f["op"], f["channel"], f["id"]) for f in frames) == sorted(
            ("withdrawn", c, photos[c]) for c in circle
        )
    async with Client.connect(gateway.ws, martin) as parent:
        for channel in circle:
            await parent.subscribe(channel, since=0)
            assert [m["id"] for m in await parent.pushes_until(1)] == [others[channel]], channel
        with pytest.raises(TimeoutError):
            await parent.next_push(timeout=0.3)


@pytest.mark.rule("W2", "W1")
async def test_signing_again_does_not_bring_withdrawn_content_back(
    gateway: Gateway, demo_families: dict[str, int], settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    lea = await child_id(gateway, "Léa")
    household = f"family:{demo_families['Famille Martin']}"
    martin = await gateway.login("martin@demo.test")
    staff_token = await gateway.login("staff@demo.test")
    async with persistence_worker(settings, redis, pool):
        async with Client.connect(gateway.ws, staff_token) as staff:
            photo = await staff.publish(household, "Léa peint", children=[lea])
        revoked = await gateway.http.delete(f"/api/children/{lea}/consent", headers=bearer(martin))
        assert revoked.json()["withdrawn"] == 1
        async with Client.connect(gateway.ws, staff_token) as staff:
            with pytest.raises(ReplyError) as refused:
                await staff.publish(household, "Léa encore", children=[lea])
            assert refused.value.code == "consent_missing"
        signed = await gateway.http.post(f"/api/children/{lea}/consent", json={"declare": True}, headers=bearer(martin))
        assert signed.status_code == 201, signed.text
        assert signed.json()["complete"] is True
        async with Client.connect(gateway.ws, staff_token) as staff:
            # Consent is complete again: new content tagging Léa passes.
            again = await staff.publish(household, "Léa colle", children=[lea])
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 2 FROM messages"))
        await wait_for(
            lambda: pool.fetchval("SELECT withdrawn_at IS NOT NULL FROM messages WHERE id = $1", uuid.UUID(photo["id"]))
        )
    assert await pool.fetchval("SELECT withdrawn_at FROM messages WHERE id = $1", uuid.UUID(again["id"])) is None
    async with Client.connect(gateway.ws, staff_token) as staff:
        await staff.subscribe(household, since=0)
        seen = await staff.pushes_until(2)
        assert [(m["id"], m.get("withdrawn", False)) for m in seen] == [(photo["id"], True), (again["id"], False)]
    async with Client.connect(gateway.ws, martin) as parent:
        await parent.subscribe(household, since=0)
        assert [m["id"] for m in await parent.pushes_until(1)] == [again["id"]]
        with pytest.raises(TimeoutError):
            await parent.next_push(timeout=0.3)


@pytest.mark.rule("H6", "H5", "M6")
async def test_a_guardian_without_parental_authority_cannot_revoke(gateway: Gateway) -> None:
    lea = await child_id(gateway, "Léa")
    pool = gateway.services.pool
    await pool.execute("UPDATE guardianships SET parental_authority = false WHERE child_id = $1", lea)
    token = await gateway.login("martin@demo.test")
    response = await gateway.http.delete(f"/api/children/{lea}/consent", headers=bearer(token))
    assert (response.status_code, response.json()["code"]) == (403, "forbidden")
    assert await pool.fetchval("SELECT count(*) FROM consents WHERE child_id = $1 AND revoked_at IS NULL", lea) == 1
    # Still a guardian of the child: the state stays readable.
    state = await gateway.http.get(f"/api/children/{lea}/consent", headers=bearer(token))
    assert state.status_code == 200, state.text
    assert state.json()["holders"] == []


async def test_staff_hear_at_once_that_a_child_became_taggable(gateway: Gateway) -> None:
    hugo = await child_id(gateway, "Hugo")
    structure = await gateway.services.pool.fetchval("SELECT structure_id FROM children WHERE id = $1", hugo)
    father = await gateway.login("dupont.pere@demo.test")
    async with (
        Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff,
        Client.connect(gateway.ws, await gateway.login("dupont.mere@demo.test")) as mother,
    ):
        await staff.subscribe(f"structure:{structure}")
        await mother.subscribe(f"structure:{structure}")
        signed = await gateway.http.post(
            f"/api/children/{hugo}/consent", json={"declare": True}, headers=bearer(father)
        )
        assert signed.status_code == 201
        event = await staff.next_push()
        assert event == {
            "op": "consent",
            "channel": f"structure:{structure}",
            "child": {"id": hugo, "name": "Hugo Dupont"},
            "complete": True,
        }
        revoked = await gateway.http.delete(f"/api/children/{hugo}/consent", headers=bearer(father))
        assert revoked.status_code == 200
        assert (await staff.next_push())["complete"] is False
        # Consent states are the staff's to follow: guardians are not sent them.
        with pytest.raises(TimeoutError):
            await mother.next_push(timeout=0.5)
