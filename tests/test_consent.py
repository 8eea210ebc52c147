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
