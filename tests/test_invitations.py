"""Invitations: an admin hands out a link; the account's owner sets their first password
with it and is logged in. Seen from the attacker's side too: used, expired, foreign and
guessed links, non-admins, and accounts that already have a password."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Gateway, bearer
from tests.test_admin_api import Demo, Elsewhere, call, d, elsewhere, ok

__all__ = ["d", "elsewhere"]  # fixtures shared with the administration tests

pytestmark = pytest.mark.usefixtures("demo_families")

NEW_PASSWORD = "a-long-new-password-42"


async def new_staff(gateway: Gateway, d: Demo) -> int:
    body = {"email": "nouvelle@demo.test", "name": "Inès Nouvelle", "role": "staff"}
    user_id: int = (await ok(gateway, "POST", d.url("/staff"), d.admin, body, status=201))["id"]
    return user_id


async def invite(gateway: Gateway, d: Demo, user_id: int) -> dict[str, Any]:
    result: dict[str, Any] = await ok(gateway, "POST", d.url(f"/users/{user_id}/invitation"), d.admin, status=201)
    return result


def token_of(invitation: dict[str, Any]) -> str:
    link: str = invitation["link"]
    assert link.startswith("/#/invite/")
    return link.removeprefix("/#/invite/")


async def test_an_invited_user_sets_their_password_and_is_logged_in(gateway: Gateway, d: Demo) -> None:
    user_id = await new_staff(gateway, d)
    token = token_of(await invite(gateway, d, user_id))
    greeting = await gateway.http.get(f"/api/invitations/{token}")
    assert greeting.json() == {
        "email": "nouvelle@demo.test",
        "name": "Inès Nouvelle",
        "structure": "Crèche Les Petits Pas",
    }
    weak = await gateway.http.post(f"/api/invitations/{token}", json={"password": "short"})
    assert (weak.status_code, weak.json()["code"]) == (400, "weak_password")
    accepted = await gateway.http.post(f"/api/invitations/{token}", json={"password": NEW_PASSWORD})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["user"]["email"] == "nouvelle@demo.test"
    me = await gateway.http.get("/api/me", headers=bearer(accepted.json()["token"]))
    assert (me.status_code, me.json()["code"]) == (403, "terms_not_accepted")
    assert (
        await gateway.http.post("/api/login", json={"email": "nouvelle@demo.test", "password": NEW_PASSWORD})
    ).status_code == 200
    # Used once: the link is dead.
    for method in ("GET", "POST"):
        reused = await gateway.http.request(
            method, f"/api/invitations/{token}", json={"password": "another-password-43"}
        )
        assert (reused.status_code, reused.json()["code"]) == (404, "invitation_invalid")
    actions = [
        r["action"]
        for r in await gateway.services.pool.fetch(
            "SELECT action FROM audit_log WHERE action LIKE 'invitation.%' ORDER BY id"
        )
    ]
    assert actions == ["invitation.create", "invitation.accept"]


async def test_a_new_link_replaces_the_old_one_and_links_expire(gateway: Gateway, d: Demo) -> None:
    user_id = await new_staff(gateway, d)
    first = token_of(await invite(gateway, d, user_id))
    second = token_of(await invite(gateway, d, user_id))
    assert (await gateway.http.get(f"/api/invitations/{first}")).status_code == 404
    assert (await gateway.http.get(f"/api/invitations/{second}")).status_code == 200
    await gateway.services.pool.execute("UPDATE invitations SET expires_at = now() - interval '1 second'")
    expired = await gateway.http.post(f"/api/invitations/{second}", json={"password": NEW_PASSWORD})
    assert (expired.status_code, expired.json()["code"]) == (404, "invitation_invalid")


async def test_only_an_admin_invites_a_member_without_a_password(
    gateway: Gateway, d: Demo, elsewhere: Elsewhere
) -> None:
    user_id = await new_staff(gateway, d)
    for token in (d.staff, await gateway.login("martin@demo.test"), elsewhere.admin):
        refused = await call(gateway, "POST", d.url(f"/users/{user_id}/invitation"), token)
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    assert (await call(gateway, "POST", d.url(f"/users/{user_id}/invitation"))).status_code == 401
    # Martin has a password: an invitation would let an admin take his account over.
    active = await call(gateway, "POST", d.url(f"/users/{d.users['martin@demo.test']}/invitation"), d.admin)
    assert (active.status_code, active.json()["code"]) == (409, "already_active")
    # Someone of another structure only: not found, as an unknown id.
    foreign = await call(
        gateway, "POST", f"/api/structures/{elsewhere.sid}/users/{user_id}/invitation", elsewhere.admin
    )
    assert (foreign.status_code, foreign.json()["code"]) == (404, "not_found")
    guessed = await gateway.http.post("/api/invitations/not-a-real-token", json={"password": NEW_PASSWORD})
    assert (guessed.status_code, guessed.json()["code"]) == (404, "invitation_invalid")
