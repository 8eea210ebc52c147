"""Data exports end to end on real servers: the request, the worker building the zip with
progress told live, the download link, who sees what, expiry, and failures retried."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import uuid
import zipfile
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from realtime.client import Client
from realtime.exports import MAX_ATTEMPTS
from realtime.permissions import ALLOW, Principal, may_export
from realtime.settings import Settings
from tests.conftest import Gateway, bearer, export_worker, media_worker, persistence_worker, settings_for, wait_for
from tests.test_media_api import ids, media_body, ready_photo

pytestmark = pytest.mark.usefixtures("demo_families")

STRUCTURE, OTHER = 1, 2


async def ask(gateway: Gateway, token: str, body: object) -> httpx.Response:
    return await gateway.http.post("/api/exports", json=body, headers=bearer(token))


async def follow(gateway: Gateway, token: str, export_id: str) -> dict[str, Any]:
    response = await gateway.http.get(f"/api/exports/{export_id}", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    found: dict[str, Any] = response.json()
    return found


async def finished(gateway: Gateway, token: str, export_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        export = await follow(gateway, token, export_id)
        return export if export["state"] in ("ready", "failed") else None

    result: dict[str, Any] = await wait_for(done, timeout=60)
    return result


async def download(gateway: Gateway, export: dict[str, Any]) -> tuple[dict[str, Any], zipfile.ZipFile]:
    response = await gateway.http.get(export["url"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    document: dict[str, Any] = json.loads(archive.read("export.json"))
    return document, archive


def texts(document: dict[str, Any]) -> set[str]:
    return {m["body"].get("text", "") for m in document["messages"]}


@contextlib.asynccontextmanager
async def persisting(settings: Settings, redis: Redis, pool: asyncpg.Pool, count: int) -> AsyncIterator[None]:
    """Messages published in the block are in PostgreSQL when it ends (`count` in all)."""
    async with persistence_worker(settings, redis, pool):
        yield
        await wait_for(lambda: pool.fetchval("SELECT count(*) = $1 FROM messages", count))


async def publish(client: Client, channel: str, body: dict[str, Any], children: list[int] | None = None) -> str:
    fields: dict[str, Any] = {"children": children} if children else {}
    reply = await client.request("publish", channel=channel, msg_id=str(uuid.uuid4()), body=body, **fields)
    message_id: str = reply["id"]
    return message_id


# -- the policy -----------------------------------------------------------------------------


def admin(structure: int = STRUCTURE) -> Principal:
    return Principal(1, "Admin", staff_of=frozenset({structure}), admin_of=frozenset({structure}))


@pytest.mark.rule("E1")
def test_anyone_exports_their_own_data() -> None:
    guardian = Principal(2, "Guardian", member_of=frozenset({STRUCTURE}))
    assert may_export(guardian, "me", None) == ALLOW
    assert may_export(admin(), "me", None) == ALLOW
    assert may_export(Principal(3, "Nobody"), "me", None) == ALLOW
    assert may_export(Principal(2, "Disabled", disabled=True), "me", None).code == "account_disabled"
    assert may_export(Principal(2, "New", terms_accepted=False), "me", None).code == "terms_not_accepted"


@pytest.mark.rule("E2")
def test_an_admin_exports_a_child_a_household_or_the_structure() -> None:
    for scope in ("child", "household", "structure"):
        assert may_export(admin(), scope, STRUCTURE) == ALLOW


@pytest.mark.rule("E3")
def test_nobody_else_exports_a_child_a_household_or_a_structure() -> None:
    staff = Principal(1, "Staff", staff_of=frozenset({STRUCTURE}), member_of=frozenset({STRUCTURE}))
    guardian = Principal(2, "Guardian", member_of=frozenset({STRUCTURE}), households=frozenset({5}))
    for scope in ("child", "household", "structure"):
        for who, structure in ((staff, STRUCTURE), (guardian, STRUCTURE), (admin(OTHER), STRUCTURE), (admin(), None)):
            decision = may_export(who, scope, structure)
            assert (decision.allowed, decision.code) == (False, "forbidden"), (who.name, scope, structure)
    assert may_export(admin(), "everything", STRUCTURE).code == "forbidden"
    disabled = Principal(1, "Admin", admin_of=frozenset({STRUCTURE}), disabled=True)
    assert may_export(disabled, "child", STRUCTURE).code == "account_disabled"


# -- over HTTP ------------------------------------------------------------------------------


@pytest.mark.rule("E4", "E5")
async def test_a_parents_export_holds_what_they_see_and_nothing_of_another_household(
    gateway: Gateway, settings: Settings, redis: Redis, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    known = await ids(gateway)
    structure = await pool.fetchval("SELECT id FROM structures")
    martin_household = f"family:{known['Famille Martin']}"
    # Julie Martin also looks after Emma Bernard, without the right to consult her content.
    martin_id = await pool.fetchval("SELECT id FROM users WHERE email = 'martin@demo.test'")
    await pool.execute(
        "INSERT INTO guardianships (child_id, user_id, parental_authority, consultation, may_post)"
        " VALUES ($1, $2, false, false, false)",
        known["Emma"],
        martin_id,
    )
    staff_token = await gateway.login("staff@demo.test")
    martin = await gateway.login("martin@demo.test")
    bernard = await gateway.login("bernard@demo.test")
    async with media_worker(gateway):
        photo = await ready_photo(gateway, staff_token, tmp_path)
    async with persisting(settings, redis, pool, 9), Client.connect(gateway.ws, staff_token) as staff:
        photo_message = await publish(staff, martin_household, media_body(photo), [known["Léa"]])
        await staff.publish(martin_household, "Léa a bien dormi")
        withdrawn = await staff.publish(martin_household, "envoyé par erreur")
        await staff.request("withdraw", channel=martin_household, id=withdrawn["id"])
        await staff.publish(f"family:{known['Famille Bernard']}", "Secret des Bernard")
        await staff.publish(f"structure:{structure}", "Fête de la crèche samedi")
        await staff.publish(f"structure:{structure}", "Emma à la fête", children=[known["Emma"]])
        await staff.publish(f"group:{known['Grands']}", "Sortie des Grands")
        await staff.publish(f"child:{known['Emma']}", "Journée d'Emma")
        async with Client.connect(gateway.ws, martin) as parent:
            await parent.publish(martin_household, "Merci, bonne journée")
    async with Client.connect(gateway.ws, martin) as parent:
        await parent.subscribe(f"user:{martin_id}")
        asked = await ask(gateway, martin, {"scope": "me"})
        assert asked.status_code == 202, asked.text
        queued = asked.json()
        assert queued["state"] == "queued"
        assert (queued["scope"], queued["subject"], queued["progress"]) == ("me", None, 0)
        # Asked again while in the making: the same export, no second job.
        again = await ask(gateway, martin, {"scope": "me"})
        assert (again.status_code, again.json()["id"]) == (200, queued["id"])
        async with export_worker(gateway):
            events = [await parent.next_push(timeout=60)]
            while events[-1]["state"] != "ready":
                events.append(await parent.next_push(timeout=60))
    assert {e["op"] for e in events} == {"export"}
    assert {(e["channel"], e["id"]) for e in events} == {(f"user:{martin_id}", queued["id"])}
    assert [e["state"] for e in events] == ["running"] * (len(events) - 1) + ["ready"]
    progress = [e["progress"] for e in events]
    assert progress[0] == 0
    assert progress[-1] == 100
    assert all(b - a >= 10 for a, b in itertools.pairwise(progress))

    ready = await follow(gateway, martin, queued["id"])
    assert ready["state"] == "ready"
    assert ready["progress"] == 100
    assert ready["bytes"] > 0
    assert {"created_at", "ready_at", "expires_at", "url"} <= set(ready)
    document, archive = await download(gateway, ready)
    assert (document["format"], document["version"], document["scope"], document["subject"]) == (
        "procreche-export",
        1,
        "me",
        None,
    )
    # Emma's group is hers to read (S4), but not what identifies Emma (V3).
    assert texts(document) == {
        "",
        "Léa a bien dormi",
        "Merci, bonne journée",
        "Fête de la crèche samedi",
        "Sortie des Grands",
    }
    assert photo_message in {m["id"] for m in document["messages"]}
    # Nothing of another household, of a child she may not consult, nor what was withdrawn.
    raw = archive.read("export.json").decode()
    for absent in ("Secret des Bernard", "Emma à la fête", "Journée d'Emma", "envoyé par erreur"):
        assert absent not in raw
    for secret in ("password", "token", "$argon2"):
        assert secret not in raw
    [account] = document["accounts"]
    assert (account["id"], account["email"], account["name"]) == (martin_id, "martin@demo.test", "Julie Martin")
    assert [m["role"] for m in account["memberships"]] == ["guardian"]
    assert [t["version"] for t in account["terms_acceptances"]] == [1]
    assert [h["id"] for h in document["households"]] == [known["Famille Martin"]]
    assert {c["first_name"] for c in document["children"]} == {"Léa", "Emma"}
    assert [c["guardian"]["id"] for c in document["consents"]] == [martin_id]
    [media] = document["media"]
    assert (media["id"], media["message_id"], media["file"]) == (photo, photo_message, f"media/{photo}/original.jpg")
    assert archive.read(media["file"]).startswith(b"\xff\xd8")
    assert document["counts"]["messages"] == 5
    assert document["counts"]["media_files"] == 1
    assert sorted(archive.namelist()) == ["export.json", media["file"]]
    archive.close()

    # Another user: the answer of an id that does not exist, and nothing in their list.
    for path in (f"/api/exports/{queued['id']}", f"/api/exports/{uuid.uuid4()}", "/api/exports/not-a-uuid"):
        refused = await gateway.http.get(path, headers=bearer(bernard))
        assert (refused.status_code, refused.json()["code"]) == (404, "not_found")
    assert (await gateway.http.get("/api/exports", headers=bearer(bernard))).json() == {"items": []}
    listed = (await gateway.http.get("/api/exports", headers=bearer(martin))).json()["items"]
    assert [e["id"] for e in listed] == [queued["id"]]
    assert "url" not in listed[0]
    audited = await pool.fetch(
        "SELECT action, actor_id, subject_id, details FROM audit_log WHERE action LIKE 'export.%'"
    )
    assert sorted(r["action"] for r in audited) == ["export.download", "export.ready", "export.request"]
    assert {r["subject_id"] for r in audited} == {queued["id"]}
    assert all(r["details"]["scope"] == "me" and r["details"]["subject"] is None for r in audited)


@pytest.mark.rule("E3")
async def test_exports_of_others_data_are_refused_without_probing(gateway: Gateway) -> None:
    known = await ids(gateway)
    structure = await gateway.services.pool.fetchval("SELECT id FROM structures")
    martin = await gateway.login("martin@demo.test")
    staff = await gateway.login("staff@demo.test")
    admin_token = await gateway.login("admin@demo.test")
    for token, body in (
        (martin, {"scope": "structure", "id": structure}),
        (martin, {"scope": "child", "id": known["Léa"]}),
        (martin, {"scope": "household", "id": known["Famille Martin"]}),
        (staff, {"scope": "household", "id": known["Famille Martin"]}),
        (admin_token, {"scope": "child", "id": 999_999}),
        (admin_token, {"scope": "household", "id": 999_999}),
        (admin_token, {"scope": "structure", "id": 999_999}),
    ):
        refused = await ask(gateway, token, body)
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), body
    malformed: list[object] = [
        {},
        {"scope": "all"},
        {"scope": "me", "id": 3},
        {"scope": "child"},
        {"scope": "child", "id": "1"},
        {"scope": "child", "id": True},
        {"scope": "child", "id": 0},
        {"scope": "me", "format": "csv"},
        ["me"],
    ]
    for wrong in malformed:
        bad = await ask(gateway, martin, wrong)
        assert (bad.status_code, bad.json()["code"]) == (400, "bad_request"), wrong
    assert (await gateway.http.post("/api/exports", json={"scope": "me"})).status_code == 401
    assert (await gateway.http.get("/api/exports")).status_code == 401
    assert await gateway.services.pool.fetchval("SELECT count(*) FROM exports") == 0


@pytest.mark.rule("E2")
async def test_an_admin_exports_a_child_a_household_and_the_structure(
    gateway: Gateway, settings: Settings, redis: Redis, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    known = await ids(gateway)
    structure = await pool.fetchval("SELECT id FROM structures")
    admin_token = await gateway.login("admin@demo.test")
    staff_token = await gateway.login("staff@demo.test")
    async with media_worker(gateway):
        photo = await ready_photo(gateway, staff_token, tmp_path)
    mother = f"family:{known['Famille Dupont (mère)']}"
    async with persisting(settings, redis, pool, 5), Client.connect(gateway.ws, staff_token) as staff:
        await publish(staff, f"group:{known['Bébés']}", media_body(photo), [known["Léa"]])
        await staff.publish(f"child:{known['Léa']}", "Léa a fait ses premiers pas")
        await staff.publish(f"family:{known['Famille Martin']}", "Pour les Martin")
        await staff.publish(mother, "Pour Anne Dupont")
        await staff.publish(f"family:{known['Famille Dupont (père)']}", "Pour Marc Dupont")
    child = await ask(gateway, admin_token, {"scope": "child", "id": known["Léa"]})
    household = await ask(gateway, admin_token, {"scope": "household", "id": known["Famille Dupont (mère)"]})
    whole = await ask(gateway, admin_token, {"scope": "structure", "id": structure})
    assert [r.status_code for r in (child, household, whole)] == [202, 202, 202]
    assert (child.json()["scope"], child.json()["subject"]) == ("child", known["Léa"])
    async with export_worker(gateway):
        exports = [await finished(gateway, admin_token, r.json()["id"]) for r in (child, household, whole)]
    assert [e["state"] for e in exports] == ["ready"] * 3

    document, archive = await download(gateway, exports[0])
    assert [c["first_name"] for c in document["children"]] == ["Léa"]
    assert [(g["guardian"]["name"], g["parental_authority"]) for g in document["guardianships"]] == [
        ("Julie Martin", True)
    ]
    assert [c["guardian"]["name"] for c in document["consents"]] == ["Julie Martin"]
    assert texts(document) == {"", "Léa a fait ses premiers pas"}
    [media] = document["media"]
    assert archive.read(media["file"]).startswith(b"\xff\xd8")
    archive.close()

    document, archive = await download(gateway, exports[1])
    assert [h["name"] for h in document["households"]] == ["Famille Dupont (mère)"]
    assert [(a["name"], a["email"]) for a in document["accounts"]] == [("Anne Dupont", "dupont.mere@demo.test")]
    # The household's own guardianships and consents: not the other household's parent's.
    assert [g["guardian"]["name"] for g in document["guardianships"]] == ["Anne Dupont"]
    assert [c["guardian"]["name"] for c in document["consents"]] == ["Anne Dupont"]
    assert texts(document) == {"Pour Anne Dupont"}
    assert archive.namelist() == ["export.json"]
    archive.close()

    document, archive = await download(gateway, exports[2])
    assert document["counts"]["messages"] == 5
    assert document["counts"]["accounts"] == 6
    assert document["counts"]["households"] == 4
    assert document["counts"]["media_files"] == 1
    assert document["reports"] == []
    archive.close()


async def test_an_expired_export_is_deleted_and_marked_expired(gateway: Gateway, pool: asyncpg.Pool) -> None:
    martin = await gateway.login("martin@demo.test")
    export_id = (await ask(gateway, martin, {"scope": "me"})).json()["id"]
    async with export_worker(gateway):
        ready = await finished(gateway, martin, export_id)
    key = await pool.fetchval("SELECT object_key FROM exports WHERE id = $1", uuid.UUID(export_id))
    store = gateway.services.media_store
    assert await store.size(key) == ready["bytes"]
    await pool.execute(
        "UPDATE exports SET expires_at = now() - interval '1 second' WHERE id = $1", uuid.UUID(export_id)
    )
    # Past its expiry, before the sweep: no more link.
    lapsed = await follow(gateway, martin, export_id)
    assert lapsed["state"] == "expired"
    assert "url" not in lapsed
    async with export_worker(gateway, sweep_s=0.1):
        await wait_for(
            lambda: pool.fetchval("SELECT state = 'expired' FROM exports WHERE id = $1", uuid.UUID(export_id))
        )
    assert await store.size(key) is None
    assert (await follow(gateway, martin, export_id))["state"] == "expired"
    # A new export of the same data may be asked for.
    assert (await ask(gateway, martin, {"scope": "me"})).status_code == 202


async def test_a_failing_build_is_retried_then_failed(gateway: Gateway, settings: Settings, tmp_path: Path) -> None:
    martin = await gateway.login("martin@demo.test")
    martin_id = (await gateway.me(martin))["user"]["id"]
    # The worker cannot make its work folder: every attempt fails.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "export-work").write_text("in the way")
    async with Client.connect(gateway.ws, martin) as parent:
        await parent.subscribe(f"user:{martin_id}")
        export_id = (await ask(gateway, martin, {"scope": "me"})).json()["id"]
        async with export_worker(gateway, settings_for(settings, data_dir=broken), retry_later=timedelta(0)):
            states = [(await parent.next_push(timeout=30))["state"]]
            while states[-1] != "failed":
                states.append((await parent.next_push(timeout=30))["state"])
    assert states == ["running", "queued"] * (MAX_ATTEMPTS - 1) + ["running", "failed"]
    failed = await follow(gateway, martin, export_id)
    assert failed["state"] == "failed"
    assert "url" not in failed
    attempts = await gateway.services.pool.fetchval("SELECT attempts FROM exports WHERE id = $1", uuid.UUID(export_id))
    assert attempts == MAX_ATTEMPTS


async def test_a_job_abandoned_by_a_dead_worker_is_taken_over(gateway: Gateway) -> None:
    martin = await gateway.login("martin@demo.test")
    export_id = (await ask(gateway, martin, {"scope": "me"})).json()["id"]
    from realtime.exports import Exports

    # A worker claimed it and died: its lease ran out.
    claimed = await Exports(gateway.services.pool).claim(timedelta(0))
    assert claimed is not None
    assert claimed.id == export_id
    async with export_worker(gateway):
        assert (await finished(gateway, martin, export_id))["state"] == "ready"


@pytest.mark.rule("E4")
async def test_an_admin_who_is_no_longer_one_gets_no_export(gateway: Gateway, pool: asyncpg.Pool) -> None:
    known = await ids(gateway)
    admin_token = await gateway.login("admin@demo.test")
    built = (await ask(gateway, admin_token, {"scope": "household", "id": known["Famille Martin"]})).json()
    async with export_worker(gateway):
        assert (await finished(gateway, admin_token, built["id"]))["state"] == "ready"
    pending = (await ask(gateway, admin_token, {"scope": "child", "id": known["Léa"]})).json()
    await pool.execute("UPDATE memberships SET role = 'staff' WHERE role = 'admin'")
    # Asked while admin, built after: refused at build time, not retried.
    async with export_worker(gateway):
        assert (await finished(gateway, admin_token, pending["id"]))["state"] == "failed"
    # Built while admin: no more link.
    refused = await gateway.http.get(f"/api/exports/{built['id']}", headers=bearer(admin_token))
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    # Their own data, still.
    assert (await ask(gateway, admin_token, {"scope": "me"})).status_code == 202
