"""The authorization matrix on real servers: role × channel kind × own / other household /
other child / other structure × consent state, over WebSocket and HTTP, and the attacker's
side (guessed ids, another structure's ids, no, forged, expired and revoked tokens).

Each test walks a table of expectations and collects every mismatch, so that a failure
shows every wrong case at once. Roles, in the demo structure "A" (see realtime/demo.py):

- admin, staff: admin@ and staff@demo.test;
- martin: guardian of "the household" (Famille Martin, Léa in Bébés), may post;
- mere: guardian of another household (Famille Dupont (mère), Hugo in Grands), may post;
- pere: guardian without consultation of Hugo (set up here), in Famille Dupont (père);
- bernard: consultation-only guardian (may not post) of Emma and Louis (Grands);
and in a second structure "B" created here: admin_b, staff_b and parent_b, guardian of Zoé
(consented), Noé (consent missing) and Ana (no holder of parental authority recorded).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest

from gateway.app import create_app
from realtime.client import Client, ReplyError
from realtime.errors import CloseCode
from realtime.passwords import Passwords
from realtime.settings import Settings
from realtime.tokens import token_digest
from tests.conftest import DEMO_PASSWORD, Gateway, bearer

pytestmark = pytest.mark.usefixtures("demo_families")

OK = "ok"
GUESS = 999_999
ROLES = ("admin", "staff", "martin", "mere", "pere", "bernard", "admin_b", "staff_b", "parent_b")
EMAILS = {
    "admin": "admin@demo.test",
    "staff": "staff@demo.test",
    "martin": "martin@demo.test",
    "mere": "dupont.mere@demo.test",
    "pere": "dupont.pere@demo.test",
    "bernard": "bernard@demo.test",
    "admin_b": "admin@lucioles.test",
    "staff_b": "staff@lucioles.test",
    "parent_b": "petit@lucioles.test",
}


def ok(*roles: str, **others: str) -> dict[str, str]:
    """Expectations by role: OK for `roles`, the given code for `others`, else forbidden."""
    return {role: OK for role in roles} | others


GUARDIANS_A = ("martin", "mere", "pere", "bernard")
STAFF_A = ("admin", "staff")
STAFF_B = ("admin_b", "staff_b")

# target → (subscribe, publish) expectations. Targets name ids resolved by Cast.channel.
CHANNELS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    # structure
    "structure:A": (ok(*STAFF_A, *GUARDIANS_A), ok(*STAFF_A)),
    "structure:B": (ok(*STAFF_B, "parent_b"), ok(*STAFF_B)),
    "structure:guess": ({}, {}),
    # group: Bébés is Léa's (the household's), Grands other children's, Moyens structure B's
    "group:bebes": (ok(*STAFF_A, "martin"), ok(*STAFF_A)),
    "group:grands": (ok(*STAFF_A, "mere", "pere", "bernard"), ok(*STAFF_A)),
    "group:moyens": (ok(*STAFF_B, "parent_b"), ok(*STAFF_B)),
    "group:guess": ({}, {}),
    # family
    "family:martin": (ok(*STAFF_A, "martin"), ok(*STAFF_A, "martin")),
    "family:bernard": (ok(*STAFF_A, "bernard"), ok(*STAFF_A, bernard="posting_not_authorised")),
    "family:pere": (ok(*STAFF_A, "pere"), ok(*STAFF_A, "pere")),
    # structure B does not let guardians post
    "family:petit": (ok(*STAFF_B, "parent_b"), ok(*STAFF_B, parent_b="posting_not_authorised")),
    "family:guess": ({}, {}),
    # child
    "child:lea": (ok(*STAFF_A, "martin"), ok(*STAFF_A)),
    "child:hugo": (ok(*STAFF_A, "mere", pere="consultation_not_authorised"), ok(*STAFF_A)),
    "child:emma": (ok(*STAFF_A, "bernard"), ok(*STAFF_A)),
    "child:zoe": (ok(*STAFF_B, "parent_b"), ok(*STAFF_B)),
    "child:guess": ({}, {}),
    # user: the owner only reads; nobody publishes
    "user:self": (ok(*ROLES), {}),
    "user:admin": (ok("admin"), {}),
    "user:parent_b": (ok("parent_b"), {}),
    "user:guess": ({}, {}),
}

# (role, target, tagged children, expected)
TAGS: list[tuple[str, str, tuple[str, ...], str]] = [
    ("staff", "child:lea", ("lea",), OK),
    ("staff", "group:bebes", ("lea",), OK),
    ("staff", "family:martin", ("lea",), OK),
    ("admin", "structure:A", ("lea",), OK),
    ("martin", "family:martin", ("lea",), OK),
    ("staff_b", "child:zoe", ("zoe",), OK),
    ("staff_b", "structure:B", ("zoe",), OK),
    # consent missing: Hugo's father has not consented; Noé's holder neither; Ana has no holder
    ("staff", "group:grands", ("hugo",), "consent_missing"),
    ("admin", "child:hugo", ("hugo",), "consent_missing"),
    ("staff", "structure:A", ("lea", "hugo"), "consent_missing"),
    ("mere", "family:mere", ("hugo",), "consent_missing"),
    ("staff_b", "family:petit", ("zoe", "noe"), "consent_missing"),
    ("staff_b", "group:moyens", ("ana",), "consent_missing"),
    # outside the channel's circle: another household's, another group's, another structure's, unknown
    ("staff", "family:martin", ("hugo",), "forbidden"),
    ("martin", "family:martin", ("hugo",), "forbidden"),
    ("staff", "group:bebes", ("emma",), "forbidden"),
    ("staff", "child:lea", ("emma",), "forbidden"),
    ("staff", "structure:A", ("zoe",), "forbidden"),
    ("staff_b", "structure:B", ("lea",), "forbidden"),
    ("staff_b", "child:zoe", ("guess",), "forbidden"),
    ("staff", "group:bebes", ("lea", "guess"), "forbidden"),
]


@dataclass
class Cast:
    ids: dict[str, int]
    tokens: dict[str, str]

    def channel(self, target: str, role: str = "") -> str:
        kind, _, key = target.partition(":")
        if key == "self":
            key = role
        return f"{kind}:{self.ids[key]}"

    def path(self, template: str) -> str:
        return template.format(**self.ids)


async def second_structure(gateway: Gateway) -> dict[str, int]:
    """Structure B: its own admin, staff, a household, children with each consent state."""
    password_hash = await Passwords().hash(DEMO_PASSWORD)
    ids: dict[str, int] = {}
    async with gateway.services.pool.acquire() as conn, conn.transaction():
        ids["B"] = await conn.fetchval(
            "INSERT INTO structures (name, guardians_may_post) VALUES ('Crèche Les Lucioles', false) RETURNING id"
        )
        ids["moyens"] = await conn.fetchval(
            "INSERT INTO groups (structure_id, name) VALUES ($1, 'Moyens') RETURNING id", ids["B"]
        )
        for key, name, role in (
            ("admin_b", "Bruno Directeur", "admin"),
            ("staff_b", "Inès Auxiliaire", "staff"),
            ("parent_b", "Camille Petit", "guardian"),
        ):
            ids[key] = await conn.fetchval(
                "INSERT INTO users (email, display_name, password_hash) VALUES ($1, $2, $3) RETURNING id",
                EMAILS[key],
                name,
                password_hash,
            )
            await conn.execute(
                "INSERT INTO memberships (structure_id, user_id, role) VALUES ($1, $2, $3)", ids["B"], ids[key], role
            )
        ids["petit"] = await conn.fetchval(
            "INSERT INTO families (structure_id, name) VALUES ($1, 'Famille Petit') RETURNING id", ids["B"]
        )
        await conn.execute("INSERT INTO family_members VALUES ($1, $2)", ids["petit"], ids["parent_b"])
        # (child, parental authority, consented)
        for key, first, authority, consented in (
            ("zoe", "Zoé", True, True),
            ("noe", "Noé", True, False),
            ("ana", "Ana", False, False),
        ):
            ids[key] = await conn.fetchval(
                "INSERT INTO children (structure_id, group_id, first_name, last_name, enrolled_on)"
                " VALUES ($1, $2, $3, 'Petit', '2026-09-01') RETURNING id",
                ids["B"],
                ids["moyens"],
                first,
            )
            await conn.execute("INSERT INTO family_children VALUES ($1, $2)", ids["petit"], ids[key])
            await conn.execute(
                "INSERT INTO guardianships (child_id, user_id, parental_authority, consultation, may_post)"
                " VALUES ($1, $2, $3, true, true)",
                ids[key],
                ids["parent_b"],
                authority,
            )
            if consented:
                await conn.execute(
                    "INSERT INTO consents (child_id, guardian_id, kind, terms_version, declaration)"
                    " VALUES ($1, $2, 'publication', 1, 'Je déclare…')",
                    ids[key],
                    ids["parent_b"],
                )
    return ids


async def cast(gateway: Gateway, families: Mapping[str, int]) -> Cast:
    pool = gateway.services.pool
    ids = await second_structure(gateway)
    ids["A"] = await pool.fetchval("SELECT id FROM structures WHERE name = 'Crèche Les Petits Pas'")
    for row in await pool.fetch("SELECT id, name FROM groups WHERE structure_id = $1", ids["A"]):
        ids[{"Bébés": "bebes", "Grands": "grands"}[row["name"]]] = row["id"]
    for row in await pool.fetch("SELECT id, first_name FROM children WHERE structure_id = $1", ids["A"]):
        ids[{"Léa": "lea", "Hugo": "hugo", "Emma": "emma", "Louis": "louis"}[row["first_name"]]] = row["id"]
    for role in ("admin", "staff", "martin", "mere", "pere", "bernard"):
        ids[role] = await pool.fetchval("SELECT id FROM users WHERE email = $1", EMAILS[role])
    ids |= {
        "martin_family": families["Famille Martin"],
        "bernard_family": families["Famille Bernard"],
        "mere_family": families["Famille Dupont (mère)"],
        "pere_family": families["Famille Dupont (père)"],
        "guess": GUESS,
    }
    # Family targets are named by their guardian: family:martin → the Martin household.
    for key in ("martin", "bernard", "mere", "pere"):
        ids[f"family_{key}"] = ids[f"{key}_family"]
    ids["family_petit"] = ids["petit"]
    # The father may no longer consult Hugo's content.
    await pool.execute(
        "UPDATE guardianships SET consultation = false WHERE child_id = $1 AND user_id = $2", ids["hugo"], ids["pere"]
    )
    tokens = dict(zip(ROLES, await asyncio.gather(*(gateway.login(EMAILS[r]) for r in ROLES)), strict=True))
    return Cast(ids, tokens)


def resolve(cast: Cast, target: str, role: str) -> str:
    kind, _, key = target.partition(":")
    if kind == "family" and key != "guess":
        key = f"family_{key}"
    return cast.channel(f"{kind}:{key}", role)


async def outcome(request: Callable[[], Awaitable[object]]) -> str:
    try:
        await request()
    except ReplyError as exc:
        return exc.code
    return OK


@pytest.mark.rule("U1", "T1", "T2", "T3", "T4")
async def test_websocket_matrix(gateway: Gateway, demo_families: dict[str, int]) -> None:
    c = await cast(gateway, demo_families)
    mismatches: list[str] = []

    async def walk(role: str) -> None:
        async with Client.connect(gateway.ws, c.tokens[role]) as client:
            for target, (subscribe, publish) in CHANNELS.items():
                channel = resolve(c, target, role)
                for op, table, request in (
                    ("subscribe", subscribe, partial(client.subscribe, channel)),
                    ("publish", publish, partial(client.publish, channel, f"{role} → {target}")),
                ):
                    expected, got = table.get(role, "forbidden"), await outcome(request)
                    if got != expected:
                        mismatches.append(f"{role} {op} {target} ({channel}): expected {expected}, got {got}")
                    if op == "subscribe" and got == OK:
                        await client.request("unsubscribe", channel=channel)
            for tagger, target, tagged, expected in TAGS:
                if tagger != role:
                    continue
                channel = resolve(c, target, role)
                got = await outcome(partial(client.publish, channel, "photo", children=[c.ids[t] for t in tagged]))
                if got != expected:
                    mismatches.append(f"{role} publish on {target} tagging {tagged}: expected {expected}, got {got}")

    await asyncio.gather(*(walk(role) for role in ROLES))
    assert not mismatches, "\n".join(sorted(mismatches))


@pytest.mark.rule("T3", "T4")
async def test_the_consent_refusal_names_the_child_and_the_missing_holders(
    gateway: Gateway, demo_families: dict[str, int]
) -> None:
    c = await cast(gateway, demo_families)
    async with Client.connect(gateway.ws, c.tokens["staff_b"]) as staff:
        for tagged, details in (
            (
                ["zoe", "noe"],
                [
                    {
                        "child": {"id": c.ids["noe"], "name": "Noé Petit"},
                        "missing": [{"id": c.ids["parent_b"], "name": "Camille Petit"}],
                    }
                ],
            ),
            (["ana"], [{"child": {"id": c.ids["ana"], "name": "Ana Petit"}, "missing": []}]),
        ):
            await staff.send_raw(
                staff.codec.encode(
                    {
                        "op": "publish",
                        "rid": "r",
                        "channel": f"group:{c.ids['moyens']}",
                        "msg_id": secrets.token_hex(8),
                        "body": {"kind": "text", "text": "photo"},
                        "children": [c.ids[t] for t in tagged],
                    }
                ).decode()
            )
            reply = await staff.next_push()
            assert reply["error"]["code"] == "consent_missing"
            assert reply["error"]["details"] == details


# HTTP: (role, method, path, body, status, code). Paths name ids of Cast.ids.
HTTP: list[tuple[str, str, str, dict[str, Any] | None, int, str]] = []


def http(roles: Mapping[str, tuple[int, str]], method: str, path: str, body: dict[str, Any] | None = None) -> None:
    HTTP.extend((role, method, path, body, status, code) for role, (status, code) in roles.items())


ALLOWED = (200, "")
FORBIDDEN = (403, "forbidden")
NOT_FOUND = (404, "not_found")
everyone_but = {role: FORBIDDEN for role in ROLES}

# A guardian reads the consent of their own children only; everything else is "not found".
http({**{r: NOT_FOUND for r in ROLES}, "martin": ALLOWED}, "GET", "/api/children/{lea}/consent")
http({**{r: NOT_FOUND for r in ROLES}, "mere": ALLOWED, "pere": ALLOWED}, "GET", "/api/children/{hugo}/consent")
http({**{r: NOT_FOUND for r in ROLES}, "parent_b": ALLOWED}, "GET", "/api/children/{zoe}/consent")
http({r: NOT_FOUND for r in ROLES}, "GET", "/api/children/{guess}/consent")
http({"martin": NOT_FOUND, "admin_b": NOT_FOUND}, "POST", "/api/children/{zoe}/consent", {"declare": True})
http({"mere": NOT_FOUND, "parent_b": NOT_FOUND, "staff": NOT_FOUND}, "DELETE", "/api/children/{lea}/consent")
# Staff read their structure's consent states; nobody else's.
http({**everyone_but, "admin": ALLOWED, "staff": ALLOWED}, "GET", "/api/structures/{A}/consents")
http({**everyone_but, "admin_b": ALLOWED, "staff_b": ALLOWED}, "GET", "/api/structures/{B}/consents")
http(everyone_but, "GET", "/api/structures/{guess}/consents")
http({"admin": FORBIDDEN, "staff": FORBIDDEN}, "GET", "/api/structures/not-an-id/consents")
http({**everyone_but, "staff": ALLOWED, "admin": ALLOWED}, "GET", "/api/structures/{A}/children/{lea}/consent")
# Another structure's child through one's own structure: not found; through theirs: forbidden.
http({"admin": NOT_FOUND, "staff": NOT_FOUND}, "GET", "/api/structures/{A}/children/{zoe}/consent")
http({"admin": FORBIDDEN, "staff": FORBIDDEN}, "GET", "/api/structures/{B}/children/{zoe}/consent")
http({"admin": NOT_FOUND}, "GET", "/api/structures/{A}/children/{zoe}")
# Administration: admins of the structure only, refused before the body is even read.
http({**everyone_but, "admin": ALLOWED}, "PATCH", "/api/structures/{A}", {"retention_months": 12})
http({**everyone_but, "admin_b": ALLOWED}, "PATCH", "/api/structures/{B}", {"retention_months": 12})
http(everyone_but, "PATCH", "/api/structures/{guess}", {"retention_months": 12})
http(
    {"admin": (400, "bad_request"), "staff": FORBIDDEN, "admin_b": FORBIDDEN}, "PATCH", "/api/structures/{A}", {"x": 1}
)
http({**everyone_but, "admin": ALLOWED, "staff": ALLOWED}, "GET", "/api/structures/{A}")
http({**everyone_but, "admin": ALLOWED}, "GET", "/api/structures/{A}/audit")
http(
    {"admin": FORBIDDEN, "staff_b": FORBIDDEN, "parent_b": FORBIDDEN},
    "DELETE",
    "/api/structures/{B}/children/{zoe}/guardians/{parent_b}",
)
http(
    {"admin": NOT_FOUND},
    "PUT",
    "/api/structures/{A}/children/{zoe}/guardians/{martin}",
    {"parental_authority": True, "consultation": True, "may_post": True},
)
http(
    {"admin": NOT_FOUND},
    "POST",
    "/api/structures/{A}/families/{petit}/members",
    {"email": EMAILS["martin"], "name": "Julie Martin"},
)


@pytest.mark.rule("U2", "H1", "H2", "H3", "H4", "H5")
async def test_http_matrix(gateway: Gateway, demo_families: dict[str, int]) -> None:
    c = await cast(gateway, demo_families)
    mismatches: list[str] = []
    for role, method, template, body, status, code in HTTP:
        path = c.path(template)
        response = await gateway.http.request(method, path, json=body, headers=bearer(c.tokens[role]))
        got_code = response.json().get("code", "") if response.status_code >= 400 else ""
        if (response.status_code, got_code) != (status, code):
            mismatches.append(
                f"{role} {method} {template} ({path}): expected {status} {code}, got {response.status_code} {got_code}"
            )
    assert not mismatches, "\n".join(mismatches)
    # Nothing was changed by the refused requests.
    assert (
        await gateway.services.pool.fetchval("SELECT count(*) FROM guardianships WHERE child_id = $1", c.ids["zoe"])
        == 1
    )
    assert await gateway.services.pool.fetchval("SELECT count(*) FROM consents WHERE revoked_at IS NOT NULL") == 0


async def stale_tokens(gateway: Gateway) -> dict[str, str]:
    """Tokens that must open nothing: forged, expired, revoked, of a disabled account."""
    pool = gateway.services.pool
    expired = await gateway.login("martin@demo.test")
    await pool.execute(
        "UPDATE sessions SET expires_at = now() - interval '1 minute' WHERE token_hash = $1", token_digest(expired)
    )
    revoked = await gateway.login("martin@demo.test")
    assert (await gateway.http.post("/api/logout", headers=bearer(revoked))).status_code == 204
    disabled = await gateway.login("bernard@demo.test")
    await pool.execute("UPDATE users SET disabled_at = now() WHERE email = 'bernard@demo.test'")
    return {
        "forged": secrets.token_urlsafe(32),
        "expired": expired,
        "revoked": revoked,
        "disabled": disabled,
        "overlong": "x" * 300,
    }


# The only /api routes served without a session; every other one must refuse a bad token.
PUBLIC = {
    ("POST", "/api/login"),
    ("GET", "/api/invitations/{token}"),
    ("POST", "/api/invitations/{token}"),
    ("GET", "/api/terms"),
    ("GET", "/api/maintenance"),
    ("GET", "/api/openapi.json"),
}
# Before the terms are accepted, a session may still do these.
WITHOUT_TERMS = {("POST", "/api/logout"), ("POST", "/api/terms/accept")}
SAMPLE_PARAMS = {"media_id": str(uuid.UUID(int=7)), "message_id": str(uuid.UUID(int=9))}


def private_routes(c: Cast) -> list[tuple[str, str, dict[str, Any]]]:
    """Every HTTP API route of the app that needs a session, as (method, path, body): read
    from the app itself, so that a new route is attacked without anyone listing it. Ids in
    paths are real ones of structure A (a token is checked before anything else)."""
    real = {"sid": c.ids["A"], "cid": c.ids["lea"], "child_id": c.ids["lea"], "uid": c.ids["martin"]}
    routes: list[tuple[str, str, dict[str, Any]]] = []
    for route in create_app(Settings.from_env()).routes:
        template = getattr(route, "path", "")
        if not template.startswith("/api/"):
            continue
        plain = re.sub(r"{(\w+):\w+}", r"{\1}", template)
        for method in sorted(set(getattr(route, "methods", ())) - {"HEAD"}):
            if (method, plain) in PUBLIC:
                continue
            path = re.sub(r"{(\w+)}", lambda m: str(real.get(m[1], SAMPLE_PARAMS.get(m[1], 1))), plain)
            routes.append((method, path, {}))
    return routes


async def test_no_forged_stale_or_revoked_token_opens_anything(gateway: Gateway, demo_families: dict[str, int]) -> None:
    c = await cast(gateway, demo_families)
    bad = await stale_tokens(gateway)
    routes = private_routes(c)
    assert len(routes) >= 50, routes
    headers: dict[str, dict[str, str]] = {
        "no token": {},
        "empty bearer": {"Authorization": "Bearer"},
        "basic": {"Authorization": "Basic bWFydGluOnh4eA=="},
        **{name: bearer(token) for name, token in bad.items()},
    }
    mismatches: list[str] = []
    for name, header in headers.items():
        expected = "invalid_token" if name in bad else "unauthenticated"
        for method, path, body in routes:
            response = await gateway.http.request(method, path, json=body, headers=header)
            got = (response.status_code, response.json().get("code"))
            if got != (401, expected):
                mismatches.append(f"HTTP {name} {method} {path}: expected 401 {expected}, got {got}")
    for name, token in bad.items():
        if name == "overlong":
            continue  # not even a token: see below
        async with Client.connect(gateway.ws) as client:
            got_code = await outcome(partial(client.request, "auth", token=token))
            await asyncio.wait_for(client.ws.wait_closed(), 5)
            closed = (got_code, client.ws.close_code)
            if closed != ("invalid_token", CloseCode.AUTH_FAILED):
                mismatches.append(f"WS auth {name}: expected invalid_token, {CloseCode.AUTH_FAILED}; got {closed}")
    # Without auth (or after a malformed one), nothing but auth is served.
    async with Client.connect(gateway.ws) as client:
        got_code = await outcome(partial(client.request, "auth", token=bad["overlong"]))
        if got_code != "bad_frame":
            mismatches.append(f"WS auth overlong: expected bad_frame, got {got_code}")
        for target in ("family:martin", "child:lea", "structure:A", "user:martin"):
            channel = resolve(c, target, "martin")
            for op, request in (
                ("subscribe", partial(client.subscribe, channel)),
                ("publish", partial(client.publish, channel, "x")),
            ):
                got_code = await outcome(request)
                if got_code != "not_authenticated":
                    mismatches.append(f"WS unauthenticated {op} {target}: got {got_code}")
    assert not mismatches, "\n".join(mismatches)
    # The refused requests changed nothing: Léa's consent stands, the structure is untouched.
    assert await gateway.services.pool.fetchval("SELECT count(*) FROM consents WHERE revoked_at IS NOT NULL") == 0
    assert await gateway.services.pool.fetchval("SELECT count(*) FROM audit_log WHERE action <> 'login'") == 0


async def test_terms_not_accepted_open_nothing_but_the_terms(gateway: Gateway, demo_families: dict[str, int]) -> None:
    c = await cast(gateway, demo_families)
    await gateway.services.pool.execute("DELETE FROM terms_acceptances WHERE user_id = $1", c.ids["martin"])
    token = await gateway.login("martin@demo.test", accept_terms=False)
    for method, path, body in private_routes(c):
        if (method, path) in WITHOUT_TERMS:
            continue
        response = await gateway.http.request(method, path, json=body, headers=bearer(token))
        assert (response.status_code, response.json()["code"]) == (403, "terms_not_accepted"), (method, path)
    async with Client.connect(gateway.ws) as client:
        assert await outcome(partial(client.request, "auth", token=token)) == "terms_not_accepted"
        await asyncio.wait_for(client.ws.wait_closed(), 5)
        assert client.ws.close_code == CloseCode.TERMS_NOT_ACCEPTED


@pytest.mark.rule("I1")
async def test_a_token_that_expires_or_is_revoked_stops_working_on_an_open_socket(
    gateway: Gateway, demo_families: dict[str, int]
) -> None:
    c = await cast(gateway, demo_families)
    token = c.tokens["martin"]
    async with Client.connect(gateway.ws, token) as client:
        await client.subscribe(resolve(c, "family:martin", "martin"))
        assert (await gateway.http.post("/api/logout", headers=bearer(token))).status_code == 204
        await asyncio.wait_for(client.ws.wait_closed(), 2)
        assert (client.ws.close_code, client.ws.close_reason) == (CloseCode.AUTH_FAILED, "session_revoked")
    # The revoked token is refused on a new socket and over HTTP alike.
    async with Client.connect(gateway.ws) as client:
        assert await outcome(partial(client.request, "auth", token=token)) == "invalid_token"
    response = await gateway.http.get("/api/me", headers=bearer(token))
    assert (response.status_code, response.json()["code"]) == (401, "invalid_token")
