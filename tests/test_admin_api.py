"""The administration API over real HTTP, on the demo structure: each operation as its
admin, the audit rows it writes, the change it announces, and the refusals seen from the
attacker's side (staff, guardians, another structure's admin, no token, bad bodies)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from redis.asyncio.client import PubSub

from realtime import demo
from realtime.invalidation import Change
from realtime.passwords import Passwords
from tests.conftest import Gateway, bearer

pytestmark = pytest.mark.usefixtures("demo_families")

OTHER_PASSWORD = "another-structure-password-42"


@dataclass(frozen=True)
class Demo:
    sid: int
    users: dict[str, int]  # by email
    children: dict[str, int]  # by first name
    groups: dict[str, int]
    families: dict[str, int]
    admin: str  # tokens
    staff: str

    def url(self, path: str = "") -> str:
        return f"/api/structures/{self.sid}{path}"


@pytest_asyncio.fixture
async def d(gateway: Gateway, demo_families: dict[str, int]) -> Demo:
    """The demo structure's ids, and tokens of its admin and of its staff member."""
    pool = gateway.services.pool
    sid = await pool.fetchval("SELECT id FROM structures WHERE name = $1", demo.STRUCTURE)
    users = {r["email"]: r["id"] for r in await pool.fetch("SELECT id, email FROM users")}
    children = {r["first_name"]: r["id"] for r in await pool.fetch("SELECT id, first_name FROM children")}
    groups = {r["name"]: r["id"] for r in await pool.fetch("SELECT id, name FROM groups")}
    admin, staff = await asyncio.gather(gateway.login("admin@demo.test"), gateway.login("staff@demo.test"))
    return Demo(sid, users, children, groups, demo_families, admin, staff)


@dataclass(frozen=True)
class Elsewhere:
    sid: int
    admin: str


@pytest_asyncio.fixture
async def elsewhere(gateway: Gateway) -> Elsewhere:
    """Another structure, with its own admin."""
    hashed = await Passwords().hash(OTHER_PASSWORD)
    async with gateway.services.pool.acquire() as conn, conn.transaction():
        sid = await conn.fetchval("INSERT INTO structures (name) VALUES ('Crèche Ailleurs') RETURNING id")
        uid = await conn.fetchval(
            "INSERT INTO users (email, display_name, password_hash)"
            " VALUES ('admin@ailleurs.test', 'Odile Ailleurs', $1) RETURNING id",
            hashed,
        )
        await conn.execute("INSERT INTO memberships (structure_id, user_id, role) VALUES ($1, $2, 'admin')", sid, uid)
    return Elsewhere(sid, await gateway.login("admin@ailleurs.test", OTHER_PASSWORD))


async def call(gateway: Gateway, method: str, path: str, token: str | None = None, body: Any = None) -> httpx.Response:
    headers = bearer(token) if token else {}
    if body is None:
        return await gateway.http.request(method, path, headers=headers)
    return await gateway.http.request(method, path, headers=headers, json=body)


async def ok(gateway: Gateway, method: str, path: str, token: str, body: Any = None, status: int = 200) -> Any:
    response = await call(gateway, method, path, token, body)
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


async def audit_rows(gateway: Gateway, action: str) -> list[dict[str, Any]]:
    rows = await gateway.services.pool.fetch(
        "SELECT actor_id, structure_id, action, subject_type, subject_id, details FROM audit_log"
        " WHERE action = $1 ORDER BY id",
        action,
    )
    return [dict(r) for r in rows]


@pytest_asyncio.fixture
async def changes(gateway: Gateway) -> AsyncIterator[PubSub]:
    """A subscription to the changes announced to the gateways while the test runs."""
    pubsub = gateway.services.redis.pubsub()
    await pubsub.subscribe(gateway.services.keys.control())
    yield pubsub
    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated


async def announced(pubsub: PubSub, predicate: Callable[[Change], bool]) -> Change:
    """The first change announced so far that matches, waiting a bounded time for it."""
    seen: list[Change] = []
    deadline = asyncio.get_running_loop().time() + 5
    while asyncio.get_running_loop().time() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            change = Change.unpack(message["data"])
            if predicate(change):
                return change
            seen.append(change)
    raise AssertionError(f"no matching change announced; got {seen}")


# -- structure settings -------------------------------------------------------------------


@pytest.mark.rule("H2")
async def test_structure_settings_read_by_staff_and_changed_by_the_admin(
    gateway: Gateway, d: Demo, changes: PubSub
) -> None:
    seen = await ok(gateway, "GET", d.url(), d.staff)
    assert seen == {"id": d.sid, "name": demo.STRUCTURE, "guardians_may_post": True, "retention_months": 12}
    updated = await ok(gateway, "PATCH", d.url(), d.admin, {"retention_months": 24, "guardians_may_post": False})
    assert updated == {**seen, "retention_months": 24, "guardians_may_post": False}
    assert await ok(gateway, "GET", d.url(), d.admin) == updated
    [row] = await audit_rows(gateway, "structure.update")
    assert row["actor_id"] == d.users["admin@demo.test"]
    assert row["structure_id"] == d.sid
    assert row["details"] == {
        "changes": {"retention_months": {"from": 12, "to": 24}, "guardians_may_post": {"from": True, "to": False}}
    }
    await announced(changes, lambda c: d.sid in c.structures)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"retention_months": 0},
        {"retention_months": 121},
        {"retention_months": "12"},
        {"retention_months": True},
        {"guardians_may_post": "yes"},
        {"name": ""},
        {"name": "x" * 201},
        {"colour": "blue"},
    ],
)
async def test_bad_settings_are_refused(gateway: Gateway, d: Demo, body: dict[str, Any]) -> None:
    refused(await call(gateway, "PATCH", d.url(), d.admin, body), 400, "bad_request")


async def test_a_body_that_is_not_a_json_object_is_refused(gateway: Gateway, d: Demo) -> None:
    for content in (b"", b"[1]", b"{not json"):
        response = await gateway.http.patch(d.url(), content=content, headers=bearer(d.admin))
        refused(response, 400, "bad_request")


async def test_structure_names_are_unique(gateway: Gateway, d: Demo, elsewhere: Elsewhere) -> None:
    refused(await call(gateway, "PATCH", d.url(), d.admin, {"name": "Crèche Ailleurs"}), 409, "name_taken")


# -- staff --------------------------------------------------------------------------------


async def test_admin_adds_and_removes_staff(gateway: Gateway, d: Demo, changes: PubSub) -> None:
    listed = await ok(gateway, "GET", d.url("/staff"), d.admin)
    assert [(s["email"], s["roles"], s["active"]) for s in listed] == [
        ("admin@demo.test", ["admin"], True),
        ("staff@demo.test", ["staff"], True),
    ]
    assert listed[1]["groups"] == sorted(d.groups.values())

    body = {"email": "Nadia@Demo.test", "name": "Nadia Auxiliaire", "role": "staff"}
    added = await ok(gateway, "POST", d.url("/staff"), d.admin, body, status=201)
    assert added == {
        "id": added["id"],
        "email": "nadia@demo.test",
        "name": "Nadia Auxiliaire",
        "active": False,  # until she sets her password through an invitation
        "roles": ["staff"],
        "groups": [],
    }
    account = await gateway.services.pool.fetchrow(
        "SELECT password_hash, must_reset_password FROM users WHERE id = $1", added["id"]
    )
    assert account is not None
    assert account["password_hash"] is None
    assert account["must_reset_password"] is True
    # Adding again changes nothing.
    await ok(gateway, "POST", d.url("/staff"), d.admin, body, status=200)
    [created] = await audit_rows(gateway, "user.create")
    [staffed] = await audit_rows(gateway, "staff.add")
    assert created["subject_id"] == staffed["subject_id"] == str(added["id"])
    assert staffed["details"] == {"role": "staff", "new_user": True}
    await announced(changes, lambda c: added["id"] in c.users)

    # An existing account keeps its name; it becomes admin too.
    promoted = await ok(
        gateway,
        "POST",
        d.url("/staff"),
        d.admin,
        {"email": "staff@demo.test", "name": "Renamed", "role": "admin"},
        status=201,
    )
    assert promoted["name"] == "Sophie Éducatrice"
    assert promoted["roles"] == ["admin", "staff"]

    staff_id = d.users["staff@demo.test"]
    await ok(gateway, "DELETE", d.url(f"/staff/{staff_id}?role=admin"), d.admin, status=204)
    await ok(gateway, "DELETE", d.url(f"/staff/{staff_id}?role=staff"), d.admin, status=204)
    refused(await call(gateway, "DELETE", d.url(f"/staff/{staff_id}?role=staff"), d.admin), 404, "not_found")
    # No longer staff: out of the groups too.
    left = await gateway.services.pool.fetchval("SELECT count(*) FROM staff_groups WHERE user_id = $1", staff_id)
    assert left == 0
    removed = await audit_rows(gateway, "staff.remove")
    assert [r["details"]["role"] for r in removed] == ["admin", "staff"]
    assert sorted(removed[1]["details"]["groups_left"]) == sorted(d.groups.values())


async def test_the_last_admin_cannot_be_removed(gateway: Gateway, d: Demo) -> None:
    admin_id = d.users["admin@demo.test"]
    refused(await call(gateway, "DELETE", d.url(f"/staff/{admin_id}?role=admin"), d.admin), 409, "last_admin")
    body = {"email": "staff@demo.test", "name": "x", "role": "admin"}
    await ok(gateway, "POST", d.url("/staff"), d.admin, body, status=201)
    await ok(gateway, "DELETE", d.url(f"/staff/{admin_id}?role=admin"), d.admin, status=204)


@pytest.mark.parametrize(
    "body",
    [
        {"email": "x@demo.test", "name": "X", "role": "guardian"},
        {"email": "x@demo.test", "name": "X"},
        {"email": "not-an-email", "name": "X", "role": "staff"},
        {"email": "x@demo.test", "name": "", "role": "staff"},
        {"email": "x@demo.test", "name": "X", "role": "staff", "password": "chosen-by-admin"},
    ],
)
async def test_bad_staff_bodies_are_refused(gateway: Gateway, d: Demo, body: dict[str, Any]) -> None:
    refused(await call(gateway, "POST", d.url("/staff"), d.admin, body), 400, "bad_request")


async def test_staff_removal_needs_a_role(gateway: Gateway, d: Demo) -> None:
    staff_id = d.users["staff@demo.test"]
    for query in ("", "?role=guardian"):
        refused(await call(gateway, "DELETE", d.url(f"/staff/{staff_id}{query}"), d.admin), 400, "bad_request")


# -- groups -------------------------------------------------------------------------------


async def test_admin_manages_groups(gateway: Gateway, d: Demo, changes: PubSub) -> None:
    groups = await ok(gateway, "GET", d.url("/groups"), d.admin)
    assert [g["name"] for g in groups] == ["Bébés", "Grands"]
    assert groups[0]["children"] == [d.children["Léa"]]

    created = await ok(gateway, "POST", d.url("/groups"), d.admin, {"name": "Moyens"}, status=201)
    assert created == {"id": created["id"], "name": "Moyens", "staff": [], "children": []}
    refused(await call(gateway, "POST", d.url("/groups"), d.admin, {"name": "Moyens"}), 409, "name_taken")
    gid = created["id"]
    renamed = await ok(gateway, "PATCH", d.url(f"/groups/{gid}"), d.admin, {"name": "Moyens-Grands"})
    assert renamed["name"] == "Moyens-Grands"

    staff_id, admin_id = d.users["staff@demo.test"], d.users["admin@demo.test"]
    put = await ok(gateway, "PUT", d.url(f"/groups/{gid}/staff"), d.admin, {"user_ids": [staff_id, admin_id]})
    assert put["staff"] == sorted([staff_id, admin_id])
    put = await ok(gateway, "PUT", d.url(f"/groups/{gid}/staff"), d.admin, {"user_ids": [admin_id]})
    assert put["staff"] == [admin_id]
    await announced(changes, lambda c: gid in c.groups and staff_id in c.users)
    martin = d.users["martin@demo.test"]
    refused(
        await call(gateway, "PUT", d.url(f"/groups/{gid}/staff"), d.admin, {"user_ids": [martin]}), 400, "not_staff"
    )
    refused(
        await call(gateway, "PUT", d.url(f"/groups/{gid}/staff"), d.admin, {"user_ids": [999999]}), 404, "not_found"
    )
    for bad in ({"user_ids": "1"}, {"user_ids": [True]}, {"user_ids": [0]}, {}):
        refused(await call(gateway, "PUT", d.url(f"/groups/{gid}/staff"), d.admin, bad), 400, "bad_request")

    # Deleting a group keeps its children enrolled, without a group.
    grands = d.groups["Grands"]
    await ok(gateway, "DELETE", d.url(f"/groups/{grands}"), d.admin, status=204)
    hugo = await ok(gateway, "GET", d.url(f"/children/{d.children['Hugo']}"), d.admin)
    assert hugo["group_id"] is None
    refused(await call(gateway, "DELETE", d.url(f"/groups/{grands}"), d.admin), 404, "not_found")
    actions = [
        r["action"]
        for r in await gateway.services.pool.fetch("SELECT action FROM audit_log WHERE action <> 'login' ORDER BY id")
    ]
    assert actions == ["group.create", "group.update", "group.staff.set", "group.staff.set", "group.delete"]
    [deleted] = await audit_rows(gateway, "group.delete")
    assert sorted(deleted["details"]["children"]) == sorted(d.children[n] for n in ("Hugo", "Emma", "Louis"))


# -- children -----------------------------------------------------------------------------


async def test_admin_manages_children(gateway: Gateway, d: Demo, changes: PubSub) -> None:
    listed = await ok(gateway, "GET", d.url("/children"), d.admin)
    assert [c["first_name"] for c in listed] == ["Emma", "Louis", "Hugo", "Léa"]
    body = {
        "first_name": "Zoé",
        "last_name": "Petit",
        "group_id": d.groups["Bébés"],
        "birth_date": "2025-03-14",
        "enrolled_on": "2026-09-01",
    }
    created = await ok(gateway, "POST", d.url("/children"), d.admin, body, status=201)
    assert created == {**body, "id": created["id"], "left_on": None}
    cid = created["id"]
    patched = await ok(
        gateway, "PATCH", d.url(f"/children/{cid}"), d.admin, {"left_on": "2027-07-31", "group_id": None}
    )
    assert patched == {**created, "left_on": "2027-07-31", "group_id": None}
    detail = await ok(gateway, "GET", d.url(f"/children/{cid}"), d.admin)
    assert detail == {**patched, "families": [], "guardians": []}
    await announced(changes, lambda c: cid in c.children and d.groups["Bébés"] in c.groups)
    [row] = await audit_rows(gateway, "child.update")
    assert row["subject_id"] == str(cid)
    # Field names only: the child's data stays out of the append-only log.
    assert row["details"] == {"fields": ["group_id", "left_on"], "group": {"from": d.groups["Bébés"], "to": None}}
    hugo = await ok(gateway, "GET", d.url(f"/children/{d.children['Hugo']}"), d.admin)
    assert {g["name"] for g in hugo["guardians"]} == {"Anne Dupont", "Marc Dupont"}
    assert len(hugo["families"]) == 2


@pytest.mark.rule("D1", "D2")
async def test_staff_correct_a_childs_record_but_not_its_group_or_enrolment(
    gateway: Gateway, d: Demo, changes: PubSub
) -> None:
    lea = d.children["Léa"]
    listed = await ok(gateway, "GET", d.url("/children"), d.staff)
    assert [c["first_name"] for c in listed] == ["Emma", "Louis", "Hugo", "Léa"]
    before = await ok(gateway, "GET", d.url(f"/children/{lea}"), d.staff)
    fixed = {"first_name": "Léa-Rose", "birth_date": "2025-02-03"}
    after = await ok(gateway, "PATCH", d.url(f"/children/{lea}"), d.staff, fixed)
    assert after == {k: v for k, v in {**before, **fixed}.items() if k not in ("families", "guardians")}
    await announced(changes, lambda c: lea in c.children)
    [row] = await audit_rows(gateway, "child.update")
    assert (row["actor_id"], row["details"]) == (d.users["staff@demo.test"], {"fields": ["birth_date", "first_name"]})
    # The group and the enrolment dates decide who sees the child's feed and when retention
    # erases it: the admins'. Refused whole, the allowed fields of the same body included.
    for body in ({"group_id": None}, {"left_on": "2027-07-31"}, {"enrolled_on": "2026-01-05", "last_name": "X"}):
        refused(await call(gateway, "PATCH", d.url(f"/children/{lea}"), d.staff, body), 403, "forbidden")
    assert await ok(gateway, "GET", d.url(f"/children/{lea}"), d.staff) == {**before, **fixed}
    assert len(await audit_rows(gateway, "child.update")) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"first_name": "A", "last_name": "B"},
        {"first_name": "A", "last_name": "B", "enrolled_on": None},
        {"first_name": "A", "last_name": "B", "enrolled_on": "01/09/2026"},
        {"first_name": "A", "last_name": "B", "enrolled_on": "2026-02-30"},
        {"first_name": "A", "last_name": "B", "enrolled_on": "20260901"},
        {"first_name": "A", "last_name": "B", "enrolled_on": "2026-09-01", "left_on": "2026-08-31"},
        {"first_name": "", "last_name": "B", "enrolled_on": "2026-09-01"},
        {"first_name": "A", "last_name": "B", "enrolled_on": "2026-09-01", "group_id": "1"},
        {"first_name": "A", "last_name": "B", "enrolled_on": "2026-09-01", "nickname": "C"},
    ],
)
async def test_bad_children_are_refused(gateway: Gateway, d: Demo, body: dict[str, Any]) -> None:
    refused(await call(gateway, "POST", d.url("/children"), d.admin, body), 400, "bad_request")


async def test_a_child_cannot_leave_before_enrolling(gateway: Gateway, d: Demo) -> None:
    url = d.url(f"/children/{d.children['Léa']}")
    refused(await call(gateway, "PATCH", url, d.admin, {"left_on": "2026-08-31"}), 400, "bad_request")
    refused(await call(gateway, "PATCH", url, d.admin, {}), 400, "bad_request")
    assert await audit_rows(gateway, "child.update") == []


# -- households ---------------------------------------------------------------------------


async def test_admin_manages_households(gateway: Gateway, d: Demo, changes: PubSub) -> None:
    families = await ok(gateway, "GET", d.url("/families"), d.admin)
    martin = next(f for f in families if f["name"] == "Famille Martin")
    assert martin["children"] == [d.children["Léa"]]
    assert martin["members"] == [
        {"id": d.users["martin@demo.test"], "name": "Julie Martin", "email": "martin@demo.test", "active": True}
    ]

    created = await ok(gateway, "POST", d.url("/families"), d.admin, {"name": "Famille Petit"}, status=201)
    fid = created["id"]
    assert created == {"id": fid, "name": "Famille Petit", "children": [], "members": []}
    refused(await call(gateway, "POST", d.url("/families"), d.admin, {"name": "Famille Martin"}), 409, "name_taken")
    assert (await ok(gateway, "PATCH", d.url(f"/families/{fid}"), d.admin, {"name": "Famille Petit-Durand"}))[
        "name"
    ] == "Famille Petit-Durand"

    member = await ok(
        gateway,
        "POST",
        d.url(f"/families/{fid}/members"),
        d.admin,
        {"email": "lucie.petit@demo.test", "name": "Lucie Petit"},
        status=201,
    )
    uid = member["id"]
    role = await gateway.services.pool.fetchval(
        "SELECT role FROM memberships WHERE structure_id = $1 AND user_id = $2", d.sid, uid
    )
    assert role == "guardian"
    await announced(changes, lambda c: uid in c.users and fid in c.families)
    await ok(gateway, "PUT", d.url(f"/families/{fid}/children/{d.children['Léa']}"), d.admin, status=204)
    family = next(f for f in await ok(gateway, "GET", d.url("/families"), d.admin) if f["id"] == fid)
    assert family["children"] == [d.children["Léa"]]
    assert [m["id"] for m in family["members"]] == [uid]

    await ok(gateway, "DELETE", d.url(f"/families/{fid}/children/{d.children['Léa']}"), d.admin, status=204)
    refused(
        await call(gateway, "DELETE", d.url(f"/families/{fid}/children/{d.children['Léa']}"), d.admin), 404, "not_found"
    )
    await ok(gateway, "DELETE", d.url(f"/families/{fid}/members/{uid}"), d.admin, status=204)
    refused(await call(gateway, "DELETE", d.url(f"/families/{fid}/members/{uid}"), d.admin), 404, "not_found")
    await ok(gateway, "DELETE", d.url(f"/families/{fid}"), d.admin, status=204)
    refused(await call(gateway, "PATCH", d.url(f"/families/{fid}"), d.admin, {"name": "x"}), 404, "not_found")
    actions = [
        r["action"]
        for r in await gateway.services.pool.fetch("SELECT action FROM audit_log WHERE action <> 'login' ORDER BY id")
    ]
    assert actions == [
        "family.create",
        "family.update",
        "user.create",
        "family.member.add",
        "family.child.add",
        "family.child.remove",
        "family.member.remove",
        "family.delete",
    ]
    bad = await call(
        gateway, "POST", d.url(f"/families/{d.families['Famille Martin']}/members"), d.admin, {"email": "x"}
    )
    refused(bad, 400, "bad_request")


# -- guardianships ------------------------------------------------------------------------


async def test_admin_sets_and_removes_guardianships(gateway: Gateway, d: Demo, changes: PubSub) -> None:
    lea, bernard = d.children["Léa"], d.users["bernard@demo.test"]
    url = d.url(f"/children/{lea}/guardians/{bernard}")
    flags = {"parental_authority": False, "consultation": True, "may_post": False}
    assert await ok(gateway, "PUT", url, d.admin, flags, status=201) == {"child_id": lea, "user_id": bernard, **flags}
    await announced(changes, lambda c: bernard in c.users and lea in c.children)
    stricter = {**flags, "consultation": False}
    assert (await ok(gateway, "PUT", url, d.admin, stricter))["consultation"] is False
    rows = await audit_rows(gateway, "guardianship.set")
    assert [r["details"] for r in rows] == [
        {"user_id": bernard, "from": None, "to": flags},
        {"user_id": bernard, "from": flags, "to": stricter},
    ]
    await ok(gateway, "DELETE", url, d.admin, status=204)
    refused(await call(gateway, "DELETE", url, d.admin), 404, "not_found")
    assert len(await audit_rows(gateway, "guardianship.remove")) == 1

    staff_url = d.url(f"/children/{lea}/guardians/{d.users['staff@demo.test']}")
    refused(await call(gateway, "PUT", staff_url, d.admin, flags), 400, "not_guardian")
    for bad in ({**flags, "may_post": "no"}, {"parental_authority": True}, {**flags, "extra": 1}):
        refused(await call(gateway, "PUT", url, d.admin, bad), 400, "bad_request")


# -- consent state ------------------------------------------------------------------------


@pytest.mark.rule("H2")
async def test_consent_state_of_hugo_shows_the_father_missing(gateway: Gateway, d: Demo) -> None:
    state = await ok(gateway, "GET", d.url(f"/children/{d.children['Hugo']}/consent"), d.staff)
    assert state["child"] == {"id": d.children["Hugo"], "name": "Hugo Dupont"}
    assert state["complete"] is False
    holders = {h["name"]: h for h in state["holders"]}
    assert holders.keys() == {"Anne Dupont", "Marc Dupont"}
    assert holders["Anne Dupont"]["consented"] is True
    assert holders["Anne Dupont"]["granted_at"] is not None
    assert holders["Marc Dupont"] == {
        "id": d.users["dupont.pere@demo.test"],
        "name": "Marc Dupont",
        "consented": False,
        "granted_at": None,
    }
    [signed] = state["history"]
    assert signed["guardian"] == {"id": d.users["dupont.mere@demo.test"], "name": "Anne Dupont"}
    assert signed["revoked_at"] is None
    assert signed["terms_version"] == 1
    assert "Hugo Dupont" in signed["declaration"]


@pytest.mark.rule("H2")
async def test_consent_summary_of_every_current_child(gateway: Gateway, d: Demo) -> None:
    # A child who left is no longer listed.
    await gateway.services.pool.execute(
        "UPDATE children SET enrolled_on = current_date - 30, left_on = current_date - 1 WHERE id = $1",
        d.children["Louis"],
    )
    summary = await ok(gateway, "GET", d.url("/consents"), d.staff)
    assert {s["child"]["name"]: s["complete"] for s in summary} == {
        "Emma Bernard": True,
        "Hugo Dupont": False,
        "Léa Martin": True,
    }
    assert all("history" not in s for s in summary)
    # Whom a channel's message may tag, for staff (who do not administer groups and households).
    lea = next(s for s in summary if s["child"]["name"] == "Léa Martin")
    assert (lea["group_id"], lea["families"]) == (d.groups["Bébés"], [d.families["Famille Martin"]])


# -- refusals -----------------------------------------------------------------------------


def admin_requests(d: Demo) -> list[tuple[str, str, Any]]:
    """One request per admin operation, with a valid body."""
    lea, martin, staff_id = d.children["Léa"], d.users["martin@demo.test"], d.users["staff@demo.test"]
    fid, gid = d.families["Famille Martin"], d.groups["Bébés"]
    flags = {"parental_authority": True, "consultation": True, "may_post": True}
    return [
        ("PATCH", d.url(), {"retention_months": 6}),
        ("GET", d.url("/staff"), None),
        ("POST", d.url("/staff"), {"email": "x@demo.test", "name": "X", "role": "admin"}),
        ("DELETE", d.url(f"/staff/{staff_id}?role=staff"), None),
        ("GET", d.url("/groups"), None),
        ("POST", d.url("/groups"), {"name": "Moyens"}),
        ("PATCH", d.url(f"/groups/{gid}"), {"name": "Petits"}),
        ("DELETE", d.url(f"/groups/{gid}"), None),
        ("PUT", d.url(f"/groups/{gid}/staff"), {"user_ids": []}),
        ("POST", d.url("/children"), {"first_name": "A", "last_name": "B", "enrolled_on": "2026-09-01"}),
        ("GET", d.url("/families"), None),
        ("POST", d.url("/families"), {"name": "Famille X"}),
        ("PATCH", d.url(f"/families/{fid}"), {"name": "Famille Y"}),
        ("DELETE", d.url(f"/families/{fid}"), None),
        ("POST", d.url(f"/families/{fid}/members"), {"email": "x@demo.test", "name": "X"}),
        ("DELETE", d.url(f"/families/{fid}/members/{martin}"), None),
        ("PUT", d.url(f"/families/{fid}/children/{lea}"), None),
        ("DELETE", d.url(f"/families/{fid}/children/{lea}"), None),
        ("PUT", d.url(f"/children/{lea}/guardians/{martin}"), flags),
        ("DELETE", d.url(f"/children/{lea}/guardians/{martin}"), None),
        ("PATCH", d.url(f"/children/{lea}"), {"enrolled_on": "2026-01-05"}),
        ("GET", d.url("/audit"), None),
    ]


def record_requests(d: Demo) -> list[tuple[str, str, Any]]:
    """What staff do on the children's records (D1)."""
    lea = d.children["Léa"]
    return [
        ("GET", d.url("/children"), None),
        ("GET", d.url(f"/children/{lea}"), None),
        ("PATCH", d.url(f"/children/{lea}"), {"first_name": "Lola"}),
    ]


def staff_reads(d: Demo) -> list[tuple[str, str, Any]]:
    return [
        ("GET", d.url(), None),
        ("GET", d.url(f"/children/{d.children['Hugo']}/consent"), None),
        ("GET", d.url("/consents"), None),
    ]


async def assert_nothing_changed(gateway: Gateway) -> None:
    assert await gateway.services.pool.fetchval("SELECT count(*) FROM audit_log WHERE structure_id IS NOT NULL") == 0


@pytest.mark.rule("H1", "M2")
async def test_staff_cannot_administer(gateway: Gateway, d: Demo) -> None:
    for method, path, body in admin_requests(d):
        refused(await call(gateway, method, path, d.staff, body), 403, "forbidden")
    await assert_nothing_changed(gateway)


@pytest.mark.rule("H1", "H2", "M2", "M4", "D3")
async def test_a_guardian_reads_neither_staff_nor_consents(gateway: Gateway, d: Demo) -> None:
    martin = await gateway.login("martin@demo.test")
    for method, path, body in [*admin_requests(d), *staff_reads(d), *record_requests(d)]:
        refused(await call(gateway, method, path, martin, body), 403, "forbidden")
    await assert_nothing_changed(gateway)


@pytest.mark.rule("H1", "H2", "U2", "D3")
async def test_another_structures_admin_is_refused_like_for_an_unknown_structure(
    gateway: Gateway, d: Demo, elsewhere: Elsewhere
) -> None:
    for method, path, body in [*admin_requests(d), *staff_reads(d), *record_requests(d)]:
        response = await call(gateway, method, path, elsewhere.admin, body)
        refused(response, 403, "forbidden")
        # The same answer for a structure that does not exist: ids cannot be probed.
        missing = await call(gateway, method, path.replace(f"/{d.sid}", "/999999", 1), elsewhere.admin, body)
        assert (missing.status_code, missing.json()) == (response.status_code, response.json())
    for path in ("/api/structures/abc", "/api/structures/99999999999999999999999"):
        refused(await call(gateway, "GET", path, elsewhere.admin), 403, "forbidden")
    await assert_nothing_changed(gateway)


@pytest.mark.rule("H3")
async def test_demo_ids_are_not_found_under_another_structure(gateway: Gateway, d: Demo, elsewhere: Elsewhere) -> None:
    own = Demo(elsewhere.sid, d.users, d.children, d.groups, d.families, elsewhere.admin, elsewhere.admin)
    for method, path, body in [*admin_requests(own), *record_requests(own)]:
        if path.endswith(("/staff", "/groups", "/children", "/families", "/audit")) or path == own.url():
            continue  # structure-level: allowed on their own structure
        refused(await call(gateway, method, path, elsewhere.admin, body), 404, "not_found")
    refused(
        await call(gateway, "GET", own.url(f"/children/{d.children['Hugo']}/consent"), elsewhere.admin),
        404,
        "not_found",
    )
    # Ids given in bodies are scoped too.
    child = {"first_name": "A", "last_name": "B", "enrolled_on": "2026-09-01", "group_id": d.groups["Bébés"]}
    refused(await call(gateway, "POST", own.url("/children"), elsewhere.admin, child), 404, "not_found")
    group = await ok(gateway, "POST", own.url("/groups"), elsewhere.admin, {"name": "Tous"}, status=201)
    staff = {"user_ids": [d.users["staff@demo.test"]]}
    refused(
        await call(gateway, "PUT", own.url(f"/groups/{group['id']}/staff"), elsewhere.admin, staff), 404, "not_found"
    )
    # Their lists hold nothing of the demo structure.
    assert await ok(gateway, "GET", own.url("/children"), elsewhere.admin) == []
    assert await ok(gateway, "GET", own.url("/families"), elsewhere.admin) == []
    assert await ok(gateway, "GET", own.url("/consents"), elsewhere.admin) == []
    assert [s["email"] for s in await ok(gateway, "GET", own.url("/staff"), elsewhere.admin)] == ["admin@ailleurs.test"]
    audit = await ok(gateway, "GET", own.url("/audit"), elsewhere.admin)
    assert [a["action"] for a in audit] == ["group.create"]


async def test_calls_without_a_token_are_refused(gateway: Gateway, d: Demo) -> None:
    for method, path, body in [*admin_requests(d), *staff_reads(d)]:
        response = await call(gateway, method, path, None, body)
        refused(response, 401, "unauthenticated")
        refused(await call(gateway, method, path, "made-up", body), 401, "invalid_token")


async def test_terms_must_be_accepted_first(gateway: Gateway, d: Demo) -> None:
    token = await gateway.login("admin@demo.test", accept_terms=False)
    await gateway.services.pool.execute("DELETE FROM terms_acceptances")
    refused(await call(gateway, "GET", d.url("/staff"), token), 403, "terms_not_accepted")


# -- audit log ----------------------------------------------------------------------------


async def test_audit_log_pages_newest_first_and_filters_by_action(gateway: Gateway, d: Demo) -> None:
    for name in ("Moyens", "Petits", "Tout-petits"):
        await ok(gateway, "POST", d.url("/groups"), d.admin, {"name": name}, status=201)
    await ok(gateway, "PATCH", d.url(), d.admin, {"retention_months": 6})
    page = await ok(gateway, "GET", d.url("/audit?limit=2"), d.admin)
    assert [(e["action"], e["details"].get("name")) for e in page] == [
        ("structure.update", None),
        ("group.create", "Tout-petits"),
    ]
    assert page[0]["actor"] == {"id": d.users["admin@demo.test"], "name": "Claire Admin"}
    assert page[0]["subject_type"] == "structure"
    assert page[0]["subject_id"] == str(d.sid)
    rest = await ok(gateway, "GET", d.url(f"/audit?before={page[-1]['id']}"), d.admin)
    assert [e["details"]["name"] for e in rest] == ["Petits", "Moyens"]
    groups = await ok(gateway, "GET", d.url("/audit?action=group."), d.admin)
    assert len(groups) == 3
    assert await ok(gateway, "GET", d.url("/audit?action=child"), d.admin) == []
    for query in ("limit=0", "limit=501", "limit=x", "before=-1"):
        refused(await call(gateway, "GET", d.url(f"/audit?{query}"), d.admin), 400, "bad_request")
