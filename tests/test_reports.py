"""Reports of messages and the moderation queue: a parent reports, staff see one case per
message live, withdraw or dismiss it, and the reporter is told; and the refusals, from the
side of whoever tries what they may not."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio

from realtime import demo
from realtime.channels import Channel
from realtime.client import Client
from realtime.reports import MAX_OPEN_PER_REPORTER
from tests.conftest import Gateway, bearer
from tests.test_admin_api import Elsewhere, elsewhere

__all__ = ["elsewhere"]


@dataclass(frozen=True)
class World:
    sid: int
    users: dict[str, int]
    families: dict[str, int]
    tokens: dict[str, str]

    @property
    def structure(self) -> str:
        return f"structure:{self.sid}"

    def family(self, name: str) -> str:
        return f"family:{self.families[name]}"


@pytest_asyncio.fixture
async def w(gateway: Gateway, demo_families: dict[str, int]) -> World:
    pool = gateway.services.pool
    sid = await pool.fetchval("SELECT id FROM structures WHERE name = $1", demo.STRUCTURE)
    users = {r["email"]: r["id"] for r in await pool.fetch("SELECT id, email FROM users")}
    emails = ("staff@demo.test", "martin@demo.test", "bernard@demo.test", "admin@demo.test")
    tokens = dict(zip(emails, await asyncio.gather(*(gateway.login(e) for e in emails)), strict=True))
    return World(sid, users, demo_families, tokens)


async def report(
    gateway: Gateway, token: str, channel: str, message_id: str, reason: str = "Pas pour ici"
) -> httpx.Response:
    return await gateway.http.post(
        "/api/reports", json={"channel": channel, "id": message_id, "reason": reason}, headers=bearer(token)
    )


async def decide(gateway: Gateway, token: str, sid: int, message_id: str, decision: str) -> httpx.Response:
    return await gateway.http.post(
        f"/api/structures/{sid}/moderation/{message_id}", json={"decision": decision}, headers=bearer(token)
    )


async def queue(gateway: Gateway, token: str, sid: int) -> list[dict[str, Any]]:
    response = await gateway.http.get(f"/api/structures/{sid}/moderation", headers=bearer(token))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def mine(gateway: Gateway, token: str) -> list[dict[str, Any]]:
    response = await gateway.http.get("/api/reports", headers=bearer(token))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def publish(gateway: Gateway, w: World, channel: str, text: str) -> str:
    async with Client.connect(gateway.ws, w.tokens["staff@demo.test"]) as staff:
        message_id: str = (await staff.publish(channel, text))["id"]
    return message_id


async def next_event(client: Client, op: str) -> dict[str, Any]:
    while (push := await client.next_push())["op"] != op:
        pass
    return push


@pytest.mark.rule("C1", "C5", "C7")
async def test_reports_of_one_message_are_one_case_and_reporting_again_changes_nothing(
    gateway: Gateway, w: World
) -> None:
    message_id = await publish(gateway, w, w.structure, "Photo de la sortie")
    first = await report(gateway, w.tokens["martin@demo.test"], w.structure, message_id, "  Mon enfant n'y est pas  ")
    assert first.status_code == 201, first.text
    assert first.json() | {"created_at": None} == {
        "id": first.json()["id"],
        "channel": w.structure,
        "message": message_id,
        "reason": "Mon enfant n'y est pas",
        "state": "open",
        "created_at": None,
        "resolved_at": None,
    }
    again = await report(gateway, w.tokens["martin@demo.test"], w.structure, message_id, "Autre raison")
    assert (again.status_code, again.json()) == (200, first.json())
    second = await report(gateway, w.tokens["bernard@demo.test"], w.structure, message_id, "Déplacé")
    assert second.status_code == 201

    [case] = await queue(gateway, w.tokens["staff@demo.test"], w.sid)
    assert case["message_id"] == message_id
    assert case["channel"] == w.structure
    assert case["message"]["body"]["text"] == "Photo de la sortie"
    assert "withdrawn" not in case["message"]
    assert [(r["reason"], r["reporter"]["id"]) for r in case["reports"]] == [
        ("Mon enfant n'y est pas", w.users["martin@demo.test"]),
        ("Déplacé", w.users["bernard@demo.test"]),
    ]
    # The admin is staff too; each reporter sees only their own report.
    assert await queue(gateway, w.tokens["admin@demo.test"], w.sid) == [case]
    assert [r["id"] for r in await mine(gateway, w.tokens["martin@demo.test"])] == [first.json()["id"]]
    assert [r["id"] for r in await mine(gateway, w.tokens["bernard@demo.test"])] == [second.json()["id"]]


@pytest.mark.rule("C5")
async def test_withdraw_removes_the_message_and_tells_staff_and_every_reporter_live(gateway: Gateway, w: World) -> None:
    message_id = await publish(gateway, w, w.structure, "Photo floue")
    async with (
        Client.connect(gateway.ws, w.tokens["staff@demo.test"]) as staff,
        Client.connect(gateway.ws, w.tokens["martin@demo.test"]) as parent,
    ):
        await staff.subscribe(w.structure, since=1)
        await parent.subscribe(f"user:{w.users['martin@demo.test']}")
        await parent.subscribe(w.structure, since=1)
        filed = await report(gateway, w.tokens["martin@demo.test"], w.structure, message_id)
        assert await next_event(staff, "moderation") == {
            "op": "moderation",
            "channel": w.structure,
            "message": message_id,
            "open": 1,
        }
        decided = await decide(gateway, w.tokens["staff@demo.test"], w.sid, message_id, "withdraw")
        assert decided.status_code == 200, decided.text
        assert decided.json() == {"message_id": message_id, "state": "withdrawn", "reports": [filed.json()["id"]]}
        assert (await next_event(staff, "moderation"))["open"] == 0
        assert await next_event(parent, "withdrawn") == {"op": "withdrawn", "channel": w.structure, "id": message_id}
        assert await next_event(parent, "report") == {
            "op": "report",
            "channel": f"user:{w.users['martin@demo.test']}",
            "id": filed.json()["id"],
            "message": message_id,
            "state": "withdrawn",
        }
    [mine_now] = await mine(gateway, w.tokens["martin@demo.test"])
    assert mine_now["state"] == "withdrawn"
    assert mine_now["resolved_at"] is not None
    assert await queue(gateway, w.tokens["staff@demo.test"], w.sid) == []
    # Resolved: a second decision finds no case.
    assert (await decide(gateway, w.tokens["admin@demo.test"], w.sid, message_id, "dismiss")).status_code == 404
    audit = await gateway.services.pool.fetch(
        "SELECT action, actor_id, subject_id, details::text AS details FROM audit_log"
        " WHERE action LIKE 'report.%' OR action LIKE 'moderation.%' ORDER BY id"
    )
    assert [(a["action"], a["actor_id"], a["subject_id"]) for a in audit] == [
        ("report.file", w.users["martin@demo.test"], message_id),
        ("moderation.withdraw", w.users["staff@demo.test"], message_id),
    ]
    assert all("Pas pour ici" not in a["details"] and "Photo" not in a["details"] for a in audit)


@pytest.mark.rule("C5")
async def test_dismiss_keeps_the_message_and_a_new_report_opens_a_new_case(gateway: Gateway, w: World) -> None:
    message_id = await publish(gateway, w, w.family("Famille Martin"), "Goûter")
    channel = w.family("Famille Martin")
    filed = await report(gateway, w.tokens["martin@demo.test"], channel, message_id)
    assert (await decide(gateway, w.tokens["staff@demo.test"], w.sid, message_id, "dismiss")).json()["state"] == (
        "dismissed"
    )
    assert not await gateway.services.bus.is_withdrawn(Channel.parse(channel), message_id)
    [dismissed] = await mine(gateway, w.tokens["martin@demo.test"])
    assert (dismissed["id"], dismissed["state"]) == (filed.json()["id"], "dismissed")
    # The case is closed; the parent may report the message again, as a new case.
    again = await report(gateway, w.tokens["martin@demo.test"], channel, message_id, "Toujours gênant")
    assert again.status_code == 201
    assert again.json()["id"] != filed.json()["id"]
    [case] = await queue(gateway, w.tokens["staff@demo.test"], w.sid)
    assert [r["reason"] for r in case["reports"]] == ["Toujours gênant"]


async def test_a_message_withdrawn_by_its_author_shows_so_in_the_queue(gateway: Gateway, w: World) -> None:
    message_id = await publish(gateway, w, w.structure, "Erreur")
    await report(gateway, w.tokens["martin@demo.test"], w.structure, message_id)
    async with Client.connect(gateway.ws, w.tokens["staff@demo.test"]) as staff:
        await staff.request("withdraw", channel=w.structure, id=message_id)
    [case] = await queue(gateway, w.tokens["staff@demo.test"], w.sid)
    assert case["message"]["withdrawn"] is True
    assert (await decide(gateway, w.tokens["staff@demo.test"], w.sid, message_id, "withdraw")).status_code == 200


@pytest.mark.rule("C2", "C3")
async def test_nobody_reports_what_they_cannot_see(gateway: Gateway, w: World) -> None:
    martin = w.family("Famille Martin")
    private = await publish(gateway, w, martin, "Pour les Martin")
    bernard = w.tokens["bernard@demo.test"]
    # Another household's channel: refused whether the message exists or not.
    for message_id in (private, str(uuid.uuid4()), "not-a-uuid"):
        refused = await report(gateway, bernard, martin, message_id)
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    # Their own channel: a message of another channel, unknown or malformed ids are unknown.
    own = w.family("Famille Bernard")
    for message_id in (private, str(uuid.uuid4()), "not-a-uuid", "x" * 100):
        unknown = await report(gateway, bernard, own, message_id)
        assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
    # A withdrawn message is gone for guardians.
    withdrawn = await publish(gateway, w, martin, "Retiré")
    async with Client.connect(gateway.ws, w.tokens["staff@demo.test"]) as staff:
        await staff.request("withdraw", channel=martin, id=withdrawn)
    gone = await report(gateway, w.tokens["martin@demo.test"], martin, withdrawn)
    assert (gone.status_code, gone.json()["code"]) == (404, "not_found")
    assert await queue(gateway, w.tokens["staff@demo.test"], w.sid) == []


@pytest.mark.rule("C3")
async def test_a_parent_cannot_report_content_about_a_child_they_may_not_consult(gateway: Gateway, w: World) -> None:
    pool = gateway.services.pool
    emma = await pool.fetchval("SELECT id FROM children WHERE first_name = 'Emma'")
    await pool.execute("UPDATE guardianships SET consultation = false WHERE child_id = $1", emma)
    channel = w.family("Famille Bernard")
    async with Client.connect(gateway.ws, w.tokens["staff@demo.test"]) as staff:
        about_emma = (await staff.publish(channel, "Emma a bien mangé", children=[emma]))["id"]
    hidden = await report(gateway, w.tokens["bernard@demo.test"], channel, about_emma)
    assert (hidden.status_code, hidden.json()["code"]) == (404, "not_found")


@pytest.mark.rule("C6")
async def test_only_the_structures_staff_moderate(gateway: Gateway, w: World, elsewhere: Elsewhere) -> None:
    message_id = await publish(gateway, w, w.structure, "Annonce")
    await report(gateway, w.tokens["martin@demo.test"], w.structure, message_id)
    for token, sid in (
        (w.tokens["martin@demo.test"], w.sid),
        (elsewhere.admin, w.sid),
        (w.tokens["staff@demo.test"], elsewhere.sid),
        (w.tokens["staff@demo.test"], 999_999),
    ):
        listed = await gateway.http.get(f"/api/structures/{sid}/moderation", headers=bearer(token))
        assert (listed.status_code, listed.json()["code"]) == (403, "forbidden")
        decided = await decide(gateway, token, sid, message_id, "withdraw")
        assert (decided.status_code, decided.json()["code"]) == (403, "forbidden")
    assert not await gateway.services.bus.is_withdrawn(Channel.parse(w.structure), message_id)
    # The other structure's staff see an empty queue of their own, not ours.
    assert await queue(gateway, elsewhere.admin, elsewhere.sid) == []
    unauthenticated = await gateway.http.get(f"/api/structures/{w.sid}/moderation")
    assert unauthenticated.status_code == 401


async def test_bad_reports_and_decisions_get_a_clear_error(gateway: Gateway, w: World) -> None:
    message_id = await publish(gateway, w, w.structure, "Annonce")
    token = w.tokens["martin@demo.test"]
    for body, code in (
        ({"channel": w.structure, "id": message_id}, "bad_request"),
        ({"channel": w.structure, "id": message_id, "reason": "   "}, "bad_request"),
        ({"channel": w.structure, "id": message_id, "reason": "x" * 2001}, "bad_request"),
        ({"channel": w.structure, "id": message_id, "reason": 5}, "bad_request"),
        ({"channel": w.structure, "id": message_id, "reason": "ok", "extra": 1}, "bad_request"),
        ({"channel": "nowhere:1", "id": message_id, "reason": "ok"}, "bad_channel"),
    ):
        response = await gateway.http.post("/api/reports", json=body, headers=bearer(token))
        assert (response.status_code, response.json()["code"]) == (400, code), body
    await report(gateway, token, w.structure, message_id)
    staff = w.tokens["staff@demo.test"]
    for decision in ("delete", None, ["withdraw"]):
        response = await decide(gateway, staff, w.sid, message_id, decision)  # type: ignore[arg-type]
        assert (response.status_code, response.json()["code"]) == (400, "bad_request")
    for target in (str(uuid.uuid4()), "not-a-uuid"):
        response = await decide(gateway, staff, w.sid, target, "withdraw")
        assert (response.status_code, response.json()["code"]) == (404, "not_found")
    assert len(await queue(gateway, staff, w.sid)) == 1


@pytest.mark.rule("C4")
async def test_one_account_cannot_flood_the_queue(gateway: Gateway, w: World) -> None:
    async with Client.connect(gateway.ws, w.tokens["staff@demo.test"]) as staff:
        ids = [(await staff.publish(w.structure, f"n{n}"))["id"] for n in range(MAX_OPEN_PER_REPORTER + 1)]
    token = w.tokens["martin@demo.test"]
    for message_id in ids[:-1]:
        assert (await report(gateway, token, w.structure, message_id)).status_code == 201
    over = await report(gateway, token, w.structure, ids[-1])
    assert (over.status_code, over.json()["code"]) == (429, "too_many_reports")
    # Another parent is not held back by it, and an outcome frees a place.
    assert (await report(gateway, w.tokens["bernard@demo.test"], w.structure, ids[-1])).status_code == 201
    await decide(gateway, w.tokens["staff@demo.test"], w.sid, ids[0], "dismiss")
    assert (await report(gateway, token, w.structure, ids[-1])).status_code == 201
