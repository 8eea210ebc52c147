"""Accounts over real HTTP: login, tokens, throttling, the terms gate, password changes,
profile rectification."""

from __future__ import annotations

import asyncio

import pytest

from realtime.client import Client
from tests.conftest import DEMO_PASSWORD, Gateway, bearer, wait_for

pytestmark = pytest.mark.usefixtures("demo_families")


async def test_each_login_is_audited_and_a_failed_one_is_not(gateway: Gateway) -> None:
    await gateway.login("staff@demo.test", accept_terms=False)
    refused = await gateway.http.post("/api/login", json={"email": "staff@demo.test", "password": "wrong-password-1"})
    assert refused.status_code == 401
    rows = await gateway.services.pool.fetch("SELECT actor_id, action, details FROM audit_log WHERE action = 'login'")
    staff_id = await gateway.services.pool.fetchval("SELECT id FROM users WHERE email = 'staff@demo.test'")
    assert [(r["actor_id"], r["details"]) for r in rows] == [(staff_id, {})]


async def test_login_returns_an_opaque_token_stored_only_hashed(gateway: Gateway) -> None:
    response = await gateway.http.post("/api/login", json={"email": "Martin@Demo.test", "password": DEMO_PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["user"]["email"] == "martin@demo.test"
    stored = await gateway.services.pool.fetch("SELECT token_hash FROM sessions")
    assert len(stored) == 1
    assert body["token"].encode() not in bytes(stored[0]["token_hash"])
    assert len(bytes(stored[0]["token_hash"])) == 32


async def test_wrong_password_and_unknown_account_get_the_same_answer(gateway: Gateway) -> None:
    wrong = await gateway.http.post("/api/login", json={"email": "martin@demo.test", "password": "not-the-password"})
    unknown = await gateway.http.post("/api/login", json={"email": "nobody@demo.test", "password": "not-the-password"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["code"] == "invalid_credentials"
    assert wrong.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("email", ["martin@demo.test", "nobody@demo.test"])
async def test_failed_logins_are_throttled_per_account(gateway: Gateway, email: str) -> None:
    limit = gateway.services.settings.login_max_attempts
    for _ in range(limit):
        response = await gateway.http.post("/api/login", json={"email": email, "password": "wrong-password!"})
        assert response.status_code == 401
    throttled = await gateway.http.post("/api/login", json={"email": email, "password": DEMO_PASSWORD})
    assert throttled.status_code == 429
    assert throttled.json()["code"] == "too_many_attempts"
    # Another account is not affected.
    other = await gateway.http.post("/api/login", json={"email": "staff@demo.test", "password": DEMO_PASSWORD})
    assert other.status_code == 200


async def test_parallel_guesses_cannot_exceed_the_limit(gateway: Gateway) -> None:
    limit = gateway.services.settings.login_max_attempts
    responses = await asyncio.gather(
        *(
            gateway.http.post("/api/login", json={"email": "bernard@demo.test", "password": f"guess-{i:08d}"})
            for i in range(limit * 3)
        )
    )
    assert sorted(r.status_code for r in responses).count(401) == limit


async def test_a_successful_login_resets_the_failure_count(gateway: Gateway) -> None:
    limit = gateway.services.settings.login_max_attempts
    for _ in range(limit - 1):
        await gateway.http.post("/api/login", json={"email": "martin@demo.test", "password": "wrong-password!"})
    await gateway.login("martin@demo.test")
    for _ in range(limit - 1):
        await gateway.http.post("/api/login", json={"email": "martin@demo.test", "password": "wrong-password!"})
    await gateway.login("martin@demo.test")


async def test_everything_waits_for_the_terms_to_be_accepted(gateway: Gateway) -> None:
    token = await gateway.login("martin@demo.test", accept_terms=False)
    me = await gateway.http.get("/api/me", headers=bearer(token))
    assert me.status_code == 403
    assert me.json()["code"] == "terms_not_accepted"
    terms = (await gateway.http.get("/api/terms")).json()
    assert terms["version"] == 1
    assert "autorité parentale" in terms["text"]
    stale = await gateway.http.post("/api/terms/accept", json={"version": 0}, headers=bearer(token))
    assert stale.status_code == 400
    assert stale.json()["code"] == "terms_version_mismatch"
    accepted = await gateway.http.post("/api/terms/accept", json={"version": 1}, headers=bearer(token))
    assert accepted.status_code == 200
    assert (await gateway.http.get("/api/me", headers=bearer(token))).status_code == 200


async def test_calls_without_a_valid_token_are_refused(gateway: Gateway) -> None:
    for headers in ({}, {"Authorization": "Bearer made-up"}, {"Authorization": "Basic abc"}):
        response = await gateway.http.get("/api/me", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"


async def test_logout_revokes_the_token(gateway: Gateway) -> None:
    token = await gateway.login("martin@demo.test")
    assert (await gateway.http.post("/api/logout", headers=bearer(token))).status_code == 204
    response = await gateway.http.get("/api/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


async def test_expired_tokens_are_refused(gateway: Gateway) -> None:
    token = await gateway.login("martin@demo.test")
    await gateway.services.pool.execute("UPDATE sessions SET expires_at = now() - interval '1 second'")
    assert (await gateway.http.get("/api/me", headers=bearer(token))).status_code == 401


async def test_me_lists_the_channels_the_user_may_subscribe_to(gateway: Gateway, demo_families: dict[str, int]) -> None:
    martin = await gateway.me(await gateway.login("martin@demo.test"))
    lea = martin["children"][0]
    bebes = await gateway.services.pool.fetchval("SELECT group_id FROM children WHERE id = $1", lea["id"])
    structure = await gateway.services.pool.fetchval("SELECT structure_id FROM children WHERE id = $1", lea["id"])
    assert {c["channel"]: c["title"] for c in martin["channels"]} == {
        f"user:{martin['user']['id']}": "Julie Martin",
        f"structure:{structure}": "Crèche Les Petits Pas",
        f"group:{bebes}": "Bébés",
        f"family:{demo_families['Famille Martin']}": "Famille Martin",
        f"child:{lea['id']}": "Léa Martin",
    }
    assert lea["first_name"] == "Léa"
    assert [r["role"] for r in martin["roles"]] == ["guardian"]
    staff = await gateway.me(await gateway.login("staff@demo.test"))
    assert {f"family:{i}" for i in demo_families.values()} <= {c["channel"] for c in staff["channels"]}
    assert len([c for c in staff["channels"] if c["channel"].startswith("child:")]) == 4
    assert len([c for c in staff["channels"] if c["channel"].startswith("group:")]) == 2


class TestPasswordChange:
    async def test_guessing_the_old_password_is_throttled(self, gateway: Gateway) -> None:
        token = await gateway.login("martin@demo.test")
        body = {"old_password": "wrong-password", "new_password": "a fresh long passphrase"}
        for _ in range(gateway.services.settings.login_max_attempts):
            response = await gateway.http.post("/api/password", json=body, headers=bearer(token))
            assert response.status_code == 403
        response = await gateway.http.post("/api/password", json=body, headers=bearer(token))
        assert (response.status_code, response.json()["code"]) == (429, "too_many_attempts")

    async def test_needs_the_old_password_and_a_strong_new_one(self, gateway: Gateway) -> None:
        token = await gateway.login("martin@demo.test")
        cases = [
            (
                {"old_password": "wrong-password", "new_password": "a fresh long passphrase"},
                403,
                "invalid_credentials",
            ),
            ({"old_password": DEMO_PASSWORD, "new_password": "short"}, 400, "weak_password"),
            ({"old_password": DEMO_PASSWORD, "new_password": "aaaaaaaaaaaaaaaa"}, 400, "weak_password"),
            ({"old_password": DEMO_PASSWORD, "new_password": "my martin password"}, 400, "weak_password"),
            ({"old_password": DEMO_PASSWORD, "new_password": DEMO_PASSWORD}, 400, "weak_password"),
        ]
        for body, status, code in cases:
            response = await gateway.http.post("/api/password", json=body, headers=bearer(token))
            assert (response.status_code, response.json()["code"]) == (status, code), body

    async def test_changes_it_and_closes_other_sessions(self, gateway: Gateway) -> None:
        token = await gateway.login("martin@demo.test")
        other = await gateway.login("martin@demo.test")
        response = await gateway.http.post(
            "/api/password",
            json={"old_password": DEMO_PASSWORD, "new_password": "une phrase de passe neuve"},
            headers=bearer(token),
        )
        assert response.status_code == 204
        assert (await gateway.http.get("/api/me", headers=bearer(token))).status_code == 200
        assert (await gateway.http.get("/api/me", headers=bearer(other))).status_code == 401
        old = await gateway.http.post("/api/login", json={"email": "martin@demo.test", "password": DEMO_PASSWORD})
        assert old.status_code == 401
        await gateway.login("martin@demo.test", "une phrase de passe neuve")
        audit = await gateway.services.pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'password.change'")
        assert audit == 1


class TestProfile:
    async def test_a_new_name_is_audited_and_signs_the_next_messages(
        self, gateway: Gateway, demo_families: dict[str, int]
    ) -> None:
        token = await gateway.login("martin@demo.test")
        family = f"family:{demo_families['Famille Martin']}"
        async with Client.connect(gateway.ws, token) as martin:
            await martin.subscribe(family)
            before = await martin.publish(family, "avant")
            response = await gateway.http.patch("/api/me", json={"name": "  Julie Martin-Roy "}, headers=bearer(token))
            assert response.status_code == 200, response.text
            assert response.json()["user"]["name"] == "Julie Martin-Roy"

            async def signed_anew() -> bool:
                await martin.publish(family, "après")
                push = await martin.pushes_until(1)
                return any(p.get("author", {}).get("name") == "Julie Martin-Roy" for p in push)

            # The gateway reloads the principal on the announced change, within a moment.
            assert before["seq"] >= 1
            await wait_for(signed_anew)
        assert (await gateway.me(token))["user"]["name"] == "Julie Martin-Roy"
        rows = await gateway.services.pool.fetch(
            "SELECT structure_id, details FROM audit_log WHERE action = 'profile.update'"
        )
        sid = await gateway.services.pool.fetchval("SELECT id FROM structures")
        # In the structure's log, with field names and never the values.
        assert [(r["structure_id"], r["details"]) for r in rows] == [(sid, {"fields": ["name"]})]

    async def test_a_new_email_takes_the_current_password(self, gateway: Gateway) -> None:
        token = await gateway.login("martin@demo.test")
        cases = [
            ({"email": "julie@demo.test"}, 400, "bad_request"),
            ({"email": "julie@demo.test", "password": "wrong-password"}, 403, "invalid_credentials"),
            ({"email": "staff@demo.test", "password": DEMO_PASSWORD}, 409, "email_taken"),
            ({"email": "no-at-sign", "password": DEMO_PASSWORD}, 400, "bad_request"),
            ({"name": ""}, 400, "bad_request"),
            ({"name": "x" * 201}, 400, "bad_request"),
            ({"nickname": "Ju"}, 400, "bad_request"),
            ({}, 400, "bad_request"),
        ]
        for body, status, code in cases:
            response = await gateway.http.patch("/api/me", json=body, headers=bearer(token))
            assert (response.status_code, response.json()["code"]) == (status, code), body
        assert (await gateway.me(token))["user"]["email"] == "martin@demo.test"
        moved = {"email": "Julie@Demo.test", "password": DEMO_PASSWORD}
        response = await gateway.http.patch("/api/me", json=moved, headers=bearer(token))
        assert response.json()["user"]["email"] == "julie@demo.test"
        # The session stays open; the new address is the login, the old one no longer.
        assert (await gateway.me(token))["user"]["email"] == "julie@demo.test"
        await gateway.login("julie@demo.test")
        old = await gateway.http.post("/api/login", json={"email": "martin@demo.test", "password": DEMO_PASSWORD})
        assert old.status_code == 401

    async def test_guessing_the_password_through_it_is_throttled(self, gateway: Gateway) -> None:
        token = await gateway.login("martin@demo.test")
        body = {"email": "julie@demo.test", "password": "wrong-password"}
        for _ in range(gateway.services.settings.login_max_attempts):
            await gateway.http.patch("/api/me", json=body, headers=bearer(token))
        body["password"] = DEMO_PASSWORD
        response = await gateway.http.patch("/api/me", json=body, headers=bearer(token))
        assert (response.status_code, response.json()["code"]) == (429, "too_many_attempts")

    async def test_needs_a_session_with_the_terms_accepted(self, gateway: Gateway) -> None:
        assert (await gateway.http.patch("/api/me", json={"name": "X"})).status_code == 401
        token = await gateway.login("martin@demo.test", accept_terms=False)
        response = await gateway.http.patch("/api/me", json={"name": "X"}, headers=bearer(token))
        assert (response.status_code, response.json()["code"]) == (403, "terms_not_accepted")


async def test_bad_bodies_get_a_clear_error(gateway: Gateway) -> None:
    for content in (b"not json", b"[1, 2]", b'{"email": 3, "password": "x"}'):
        response = await gateway.http.post("/api/login", content=content)
        assert response.status_code == 400
        assert response.json()["code"] == "bad_request"


async def test_healthz_reports_both_servers(gateway: Gateway) -> None:
    response = await gateway.http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
