"""Erasure of a child, a household or a user: afterwards no row, no Redis stream entry and no
stored object holds their data, a message not yet persisted when it happened never comes
back, connected clients drop the erased messages; and the refusals."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from realtime import demo
from realtime.client import Client
from realtime.settings import Settings
from tests.conftest import Gateway, bearer, media_worker, persistence_worker, wait_for
from tests.test_media_api import ids, media_body, ready_photo
from workers.retention import RetentionJob

pytestmark = pytest.mark.usefixtures("demo_families")

SECRET = "Léa-secret"


async def database_text(pool: asyncpg.Pool) -> str:
    """Every row of every table but the audit log, as text."""
    tables = [
        r["tablename"]
        for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        if r["tablename"] != "audit_log"
    ]
    parts = [await pool.fetchval(f"SELECT coalesce(string_agg(t::text, chr(10)), '') FROM \"{t}\" t") for t in tables]
    return "\n".join(parts)


async def redis_text(redis: Redis, prefix: str) -> bytes:
    """Every string, set and stream entry under the test's key prefix."""
    found: list[Any] = []
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        kind: Any = await redis.type(key)
        if kind == b"stream":
            entries: Any = await redis.xrange(key)
            for _, fields in entries:
                found.extend(fields.values())
        elif kind == b"string":
            found.append(await redis.get(key) or b"")
        elif kind == b"set":
            found.extend(await redis.smembers(key))
    return b"\n".join(found)


def stored_files(settings: Settings) -> set[str]:
    return {p.name for p in settings.media_root.rglob("*") if p.is_file() and p.name != ".signing-key"} | {
        p.parent.name for p in settings.media_root.rglob("*") if p.is_file()
    }


async def erase(gateway: Gateway, token: str, subject: str, subject_id: int) -> httpx.Response:
    sid = await gateway.services.pool.fetchval("SELECT id FROM structures WHERE name = $1", demo.STRUCTURE)
    return await gateway.http.post(
        f"/api/structures/{sid}/erasures", json={"subject": subject, "id": subject_id}, headers=bearer(token)
    )


async def publish(client: Client, channel: str, body: dict[str, Any], children: list[int] | None = None) -> str:
    fields: dict[str, Any] = {"children": children} if children else {}
    reply = await client.request("publish", channel=channel, msg_id=str(uuid.uuid4()), body=body, **fields)
    message_id: str = reply["id"]
    return message_id


async def test_a_child_is_erased_from_rows_streams_and_store_and_nothing_comes_back(
    gateway: Gateway, settings: Settings, redis: Redis, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    n = await ids(gateway)
    lea, martin, bebes = n["Léa"], n["Famille Martin"], n["Bébés"]
    staff = await gateway.login("staff@demo.test")
    admin = await gateway.login("admin@demo.test")
    async with media_worker(gateway):
        photo = await ready_photo(gateway, staff, tmp_path, channel=f"child:{lea}")
    async with Client.connect(gateway.ws, staff) as client:
        async with persistence_worker(settings, redis, pool):
            await publish(client, f"child:{lea}", {"kind": "text", "text": f"{SECRET} 1"})
            await publish(client, f"child:{lea}", media_body(photo, text=f"{SECRET} photo"), [lea])
            await publish(
                client,
                f"family:{martin}",
                {"kind": "daily_report", "child": lea, "date": "2026-11-25", "note": f"{SECRET} day"},
            )
            kept = await publish(client, f"family:{martin}", {"kind": "text", "text": "Pour toute la famille"})
            await wait_for(lambda: pool.fetchval("SELECT count(*) = 4 FROM messages"))
        # Acknowledged, not persisted yet: only in Redis when the erasure happens.
        pending = await publish(client, f"group:{bebes}", {"kind": "text", "text": f"{SECRET} group"}, [lea])
        await client.subscribe(f"group:{bebes}", since=1)
        media_before = stored_files(settings)
        assert photo in media_before

        erased = await erase(gateway, admin, "child", lea)
        assert erased.status_code == 200, erased.text
        assert erased.json() == {"subject": "child", "id": lea, "messages": 4, "media": 1}
        # Staff following the group see the erased message go.
        while (push := await client.next_push())["op"] != "withdrawn":
            pass
        assert push == {"op": "withdrawn", "channel": f"group:{bebes}", "id": pending}

    # The worker drains the ingest stream: the erased message is not inserted, nor set aside.
    async with persistence_worker(settings, redis, pool):
        await wait_for(lambda: _ingest_drained(redis, gateway))
    assert SECRET not in await database_text(pool)
    assert SECRET.encode() not in await redis_text(redis, settings.redis_prefix)
    assert photo not in stored_files(settings)
    assert await pool.fetchval("SELECT count(*) FROM children WHERE id = $1", lea) == 0
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE id = $1", uuid.UUID(kept)) == 1
    [entry] = await pool.fetch(
        "SELECT actor_id, action, subject_id, details::text FROM audit_log WHERE action LIKE 'erasure.%'"
    )
    assert (entry["action"], entry["subject_id"]) == ("erasure.child", str(lea))
    assert SECRET not in entry["details"]
    assert "Léa" not in entry["details"]


async def _ingest_drained(redis: Redis, gateway: Gateway) -> bool:
    keys = gateway.services.keys
    for stream in keys.all_ingest():
        groups = await redis.xinfo_groups(stream) if await redis.exists(stream) else []
        if any(g["pending"] or g.get("lag") for g in groups):
            return False
    return True


async def test_a_household_is_erased_with_its_conversation(
    gateway: Gateway, settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    n = await ids(gateway)
    martin = n["Famille Martin"]
    staff, parent, admin = await asyncio.gather(
        gateway.login("staff@demo.test"), gateway.login("martin@demo.test"), gateway.login("admin@demo.test")
    )
    async with Client.connect(gateway.ws, staff) as client, persistence_worker(settings, redis, pool):
        await publish(client, f"family:{martin}", {"kind": "text", "text": f"{SECRET} household"})
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 1 FROM messages"))
    assert (await erase(gateway, admin, "household", martin)).json()["messages"] == 1
    assert SECRET not in await database_text(pool)
    assert SECRET.encode() not in await redis_text(redis, settings.redis_prefix)
    # The parent's account stays; the household's channel is gone for them.
    me = await gateway.me(parent)
    assert f"family:{martin}" not in [c["channel"] for c in me["channels"]]


async def test_a_guardian_asks_for_erasure_and_an_admin_confirms_it(
    gateway: Gateway, settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    n = await ids(gateway)
    bernard = await gateway.login("bernard@demo.test")
    admin = await gateway.login("admin@demo.test")
    uid = (await gateway.me(bernard))["user"]["id"]
    sid = await pool.fetchval("SELECT id FROM structures WHERE name = $1", demo.STRUCTURE)
    await pool.execute("UPDATE structures SET guardians_may_post = true")
    await pool.execute("UPDATE guardianships SET may_post = true WHERE user_id = $1", uid)
    async with Client.connect(gateway.ws, bernard) as client, persistence_worker(settings, redis, pool):
        await publish(client, f"family:{n['Famille Bernard']}", {"kind": "text", "text": f"{SECRET} from Paul"})
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 1 FROM messages"))

    asked = await gateway.http.post("/api/me/erasure", headers=bearer(bernard))
    assert asked.status_code == 201, asked.text
    again = await gateway.http.post("/api/me/erasure", headers=bearer(bernard))
    assert (again.status_code, again.json()) == (200, asked.json())
    waiting = await gateway.http.get(f"/api/structures/{sid}/erasure-requests", headers=bearer(admin))
    assert [r["user"]["email"] for r in waiting.json()["items"]] == ["bernard@demo.test"]

    # He holds parental authority over children still enrolled: those guardianships end first.
    refused = await erase(gateway, admin, "user", uid)
    assert (refused.status_code, refused.json()["code"]) == (409, "holds_parental_authority")
    for child in await pool.fetch("SELECT child_id FROM guardianships WHERE user_id = $1", uid):
        path = f"/api/structures/{sid}/children/{child['child_id']}/guardians/{uid}"
        ended = await gateway.http.delete(path, headers=bearer(admin))
        assert ended.status_code == 204, ended.text
    erased = await erase(gateway, admin, "user", uid)
    assert erased.json() == {"subject": "user", "id": uid, "messages": 1, "media": 0}

    assert (await gateway.http.get("/api/me", headers=bearer(bernard))).status_code == 401
    text = await database_text(pool)
    assert SECRET not in text
    assert "bernard@demo.test" not in text
    assert "Paul Bernard" not in text
    assert SECRET.encode() not in await redis_text(redis, settings.redis_prefix)
    assert (await gateway.http.get(f"/api/structures/{sid}/erasure-requests", headers=bearer(admin))).json() == {
        "items": []
    }
    actions = [r["action"] for r in await pool.fetch("SELECT action FROM audit_log WHERE subject_id = $1", str(uid))]
    assert "erasure.request" in actions
    assert "erasure.user" in actions


async def test_only_an_admin_of_the_structure_erases_and_accounts_others_depend_on_are_kept(
    gateway: Gateway, pool: asyncpg.Pool
) -> None:
    n = await ids(gateway)
    admin = await gateway.login("admin@demo.test")
    staff = await gateway.login("staff@demo.test")
    parent = await gateway.login("martin@demo.test")
    for token in (staff, parent):
        refused = await erase(gateway, token, "child", n["Léa"])
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    for body, code in (
        ({"subject": "structure", "id": 1}, "bad_request"),
        ({"subject": "child", "id": 0}, "bad_request"),
        ({"subject": "child"}, "bad_request"),
    ):
        sid = await pool.fetchval("SELECT id FROM structures WHERE name = $1", demo.STRUCTURE)
        response = await gateway.http.post(f"/api/structures/{sid}/erasures", json=body, headers=bearer(admin))
        assert (response.status_code, response.json()["code"]) == (400, code)
    unknown = await erase(gateway, admin, "child", 999_999)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
    me = (await gateway.me(admin))["user"]["id"]
    last = await erase(gateway, admin, "user", me)
    assert (last.status_code, last.json()["code"]) == (409, "last_admin")
    assert await pool.fetchval("SELECT count(*) FROM children WHERE id = $1", n["Léa"]) == 1


async def test_retention_erases_a_child_who_left_more_than_n_months_ago_only(
    gateway: Gateway, settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    n = await ids(gateway)
    lea, hugo, emma = n["Léa"], n["Hugo"], n["Emma"]
    await pool.execute("UPDATE structures SET retention_months = 6")
    # Léa left 7 months ago (N+1), Hugo 5 months ago (N-1); Emma is still enrolled.
    await pool.execute("UPDATE children SET enrolled_on = current_date - interval '3 years'")
    await pool.execute("UPDATE children SET left_on = current_date - interval '7 months' WHERE id = $1", lea)
    await pool.execute("UPDATE children SET left_on = current_date - interval '5 months' WHERE id = $1", hugo)
    staff = await gateway.login("staff@demo.test")
    async with Client.connect(gateway.ws, staff) as client, persistence_worker(settings, redis, pool):
        await publish(client, f"child:{lea}", {"kind": "text", "text": f"{SECRET} retention"})
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 1 FROM messages"))
    s = gateway.services
    job = RetentionJob(s.pool, s.redis, s.keys, s.media_store)
    assert await job.round() == 1
    remaining = {r["id"] for r in await pool.fetch("SELECT id FROM children")}
    assert lea not in remaining
    assert {hugo, emma} <= remaining
    assert SECRET not in await database_text(pool)
    [why] = await pool.fetch("SELECT actor_id, details->>'why' AS why FROM audit_log WHERE action = 'erasure.child'")
    assert (why["actor_id"], why["why"]) == (None, "retention")
    # Nothing more is due: a second round erases nothing.
    assert await job.round() == 0
