"""Rectification and erasure in Chromium: a parent corrects their name and email (the email
with their password); staff correct a child's record (names and birth date, the group stays
the admins'); a parent asks for the erasure of their account, which an admin sees and
confirms, refused while they hold parental authority over an enrolled child; an admin
erases a child and a household from their pages."""

from __future__ import annotations

import json
import re

from playwright.async_api import Browser, expect

from tests.conftest import DEMO_PASSWORD, Gateway, bearer
from tests.e2e import (
    NEEDS_CHROMIUM,
    UserPage,
    browser,
    channel_of,
    login_ui,
    new_page,
    open_admin,
    pages,
    publish,
)

__all__ = ["browser", "pages"]  # the harness's fixtures, used by name

pytestmark = NEEDS_CHROMIUM

HOLDS_AUTHORITY = (
    "Cette personne est titulaire de l'autorité parentale d'un enfant encore inscrit :"
    " retirez-la d'abord des responsables de l'enfant, sur la page de l'enfant."
)


async def test_a_parent_corrects_their_name_and_their_email_with_their_password(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    parent = await new_page(browser, gateway, pages, phone=True)
    page = parent.page
    await login_ui(page, "martin@demo.test")
    await page.get_by_role("link", name="Compte").click()
    profile = page.get_by_role("form", name="Mon profil")
    password = profile.get_by_label("Votre mot de passe")
    saved = profile.get_by_role("status")
    # The password is asked only for a new email.
    await expect(password).to_be_hidden()
    await profile.get_by_label("Nom", exact=True).fill("Julie Martin-Roux")
    await profile.get_by_role("button", name="Enregistrer mon profil").click()
    await expect(saved).to_have_text("Profil enregistré.")
    await expect(page.get_by_text("Julie Martin-Roux", exact=True)).to_be_visible()

    await profile.get_by_label("Adresse e-mail").fill("julie.roux@example.test")
    await expect(password).to_be_visible()
    await password.fill("pas le bon mot de passe")
    await profile.get_by_role("button", name="Enregistrer mon profil").click()
    await expect(profile.get_by_role("alert")).to_have_text("Mot de passe incorrect.")
    # Another account's email is refused too.
    await profile.get_by_label("Adresse e-mail").fill("bernard@demo.test")
    await password.fill(DEMO_PASSWORD)
    await profile.get_by_role("button", name="Enregistrer mon profil").click()
    await expect(profile.get_by_role("alert")).to_have_text("Un autre compte utilise déjà cette adresse e-mail.")
    await expect(page.get_by_text("martin@demo.test", exact=True)).to_be_visible()

    await profile.get_by_label("Adresse e-mail").fill("julie.roux@example.test")
    await password.fill(DEMO_PASSWORD)
    await profile.get_by_role("button", name="Enregistrer mon profil").click()
    await expect(saved).to_have_text("Profil enregistré.")
    await expect(page.get_by_text("julie.roux@example.test", exact=True)).to_be_visible()
    await expect(password).to_be_hidden()

    # The server has them: the new email logs in, and the page shows them once read again.
    token = await gateway.login("julie.roux@example.test", accept_terms=False)
    assert (await gateway.me(token))["user"]["name"] == "Julie Martin-Roux"
    await page.reload()
    await expect(page.get_by_text("Julie Martin-Roux", exact=True)).to_be_visible()
    await expect(page.get_by_text("julie.roux@example.test", exact=True)).to_be_visible()
    await expect(profile.get_by_label("Nom", exact=True)).to_have_value("Julie Martin-Roux")


async def test_staff_correct_a_childs_record_but_not_its_group(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    staff = await new_page(browser, gateway, pages)
    page = staff.page
    await login_ui(page, "staff@demo.test")
    nav = page.get_by_role("navigation", name="Navigation principale")
    await nav.get_by_role("link", name="Fiches enfants").click()
    await expect(page.get_by_role("heading", level=2, name="Fiches enfants")).to_be_focused()
    current = page.get_by_role("list", name="Enfants inscrits")
    await expect(current.get_by_role("listitem").filter(has_text="Léa Martin")).to_contain_text("Bébés")
    await current.get_by_role("link", name="Léa Martin").click()
    await expect(page.get_by_role("heading", level=2, name="Léa Martin")).to_be_visible()
    child_id = int(re.sub(r".*#/records/", "", page.url))

    record = page.get_by_role("form", name="Fiche")
    await expect(record.get_by_label("Prénom")).to_have_value("Léa")
    # The group and the enrolment dates are shown, not offered for editing.
    enrolment = page.get_by_role("region", name="Inscription")
    await expect(enrolment).to_contain_text("Bébés")
    await expect(enrolment).to_contain_text("modifiés par un administrateur")
    await expect(page.get_by_label("Groupe")).to_have_count(0)
    await expect(page.get_by_label("Date d'inscription")).to_have_count(0)

    await record.get_by_label("Prénom").fill("Léna")
    await record.get_by_label("Date de naissance").fill("2025-03-14")
    async with page.expect_request(lambda r: r.method == "PATCH") as patching:
        await record.get_by_role("button", name="Enregistrer").click()
    # Only what changed is sent.
    assert json.loads((await patching.value).post_data or "") == {"first_name": "Léna", "birth_date": "2025-03-14"}
    await expect(record.get_by_role("status")).to_have_text("Enregistré.")
    await expect(page.get_by_role("heading", level=2, name="Léna Martin")).to_be_visible()

    token = await gateway.login("staff@demo.test")
    [sid] = {r["structure_id"] for r in (await gateway.me(token))["roles"]}
    response = await gateway.http.get(f"/api/structures/{sid}/children/{child_id}", headers=bearer(token))
    child = response.json()
    assert (child["first_name"], child["last_name"], child["birth_date"]) == ("Léna", "Martin", "2025-03-14")
    await page.reload()
    await expect(page.get_by_role("form", name="Fiche").get_by_label("Prénom")).to_have_value("Léna")
    await page.get_by_role("form", name="Fiche").get_by_role("button", name="Enregistrer").click()
    await expect(page.get_by_role("form", name="Fiche").get_by_role("status")).to_have_text("Rien n'a changé.")


async def test_a_parent_asks_for_erasure_and_the_admin_is_refused_while_they_hold_parental_authority(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    parent = await new_page(browser, gateway, pages, phone=True)
    await login_ui(parent.page, "martin@demo.test")
    await parent.page.get_by_role("link", name="Compte").click()
    card = parent.page.get_by_role("region", name="Supprimer mon compte")
    await expect(card).to_contain_text("administrateurs de votre structure")
    await card.get_by_role("button", name="Demander la suppression de mon compte").click()
    await parent.page.get_by_role("dialog").get_by_role("button", name="Demander la suppression").click()
    asked = card.get_by_text(re.compile(r"^Demande envoyée le .+\.$"))
    await expect(asked).to_be_visible()
    await expect(card.get_by_role("button")).to_have_count(0)
    await parent.page.reload()  # read again from the server
    await expect(asked).to_be_visible()
    await expect(card.get_by_role("button")).to_have_count(0)

    admin = await new_page(browser, gateway, pages)
    await login_ui(admin.page, "admin@demo.test")
    await open_admin(admin.page, "Effacements")
    requests = admin.page.get_by_role("list", name="Demandes d'effacement")
    item = requests.get_by_role("listitem").filter(has_text="Julie Martin")
    await expect(item).to_contain_text("martin@demo.test")
    await item.get_by_role("button", name="Effacer le compte de Julie Martin").click()
    dialog = admin.page.get_by_role("dialog")
    await expect(dialog).to_contain_text("C'est irréversible.")
    await dialog.get_by_role("button", name="Effacer le compte").click()
    # Julie Martin holds parental authority over Léa, still enrolled: refused, nothing erased.
    await expect(item.get_by_role("alert")).to_have_text(HOLDS_AUTHORITY)
    await expect(requests.get_by_role("listitem")).to_have_count(1)
    await gateway.login("martin@demo.test", accept_terms=False)


async def test_an_admin_erases_a_child_then_the_account_of_its_parent(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    staff_token = await gateway.login("staff@demo.test")
    martin_token = await gateway.login("martin@demo.test")
    lea = await channel_of(gateway, martin_token, "Léa Martin")
    await publish(gateway, staff_token, lea, {"kind": "text", "text": "Léa a bien mangé"})
    asked = await gateway.http.post("/api/me/erasure", headers=bearer(martin_token))
    assert asked.status_code == 201, asked.text

    admin = await new_page(browser, gateway, pages)
    page = admin.page
    await login_ui(page, "admin@demo.test")
    await open_admin(page, "Enfants")
    await page.get_by_role("list", name="Enfants inscrits").get_by_role("link", name="Léa Martin").click()
    await expect(page.get_by_role("heading", level=2, name="Léa Martin")).to_be_visible()
    danger = page.get_by_role("region", name="Effacer définitivement")
    await danger.get_by_role("button", name="Effacer définitivement").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("Effacer définitivement Léa Martin et toutes ses données ? C'est irréversible")
    await dialog.get_by_role("button", name="Effacer définitivement").click()
    # Back on the list, which says what was erased and no longer holds her.
    await expect(page.get_by_role("heading", level=2, name="Enfants")).to_be_visible()
    erased = "Léa Martin effacé(e) : 1 message(s) et 0 photo(s) ou vidéo(s) effacés."
    await expect(page.locator("#main").get_by_text(erased)).to_be_visible()
    children = page.get_by_role("list", name="Enfants inscrits")
    await expect(children).to_contain_text("Hugo Dupont")
    await expect(children.get_by_role("link", name="Léa Martin")).to_have_count(0)

    # Julie Martin holds no parental authority any more: her account can be erased.
    await (
        page.get_by_role("navigation", name="Rubriques de l'administration")
        .get_by_role("link", name="Effacements")
        .click()
    )
    await page.get_by_role("button", name="Effacer le compte de Julie Martin").click()
    await page.get_by_role("dialog").get_by_role("button", name="Effacer le compte").click()
    await expect(page.get_by_role("status").filter(has_text="Compte de")).to_have_text(
        "Compte de Julie Martin effacé : 0 message(s) et 0 photo(s) ou vidéo(s) effacés."
    )
    await expect(page.get_by_text("Aucune demande d'effacement.")).to_be_visible()
    response = await gateway.http.post("/api/login", json={"email": "martin@demo.test", "password": DEMO_PASSWORD})
    assert response.json()["code"] == "invalid_credentials"


async def test_an_admin_erases_a_household_from_its_page(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    admin = await new_page(browser, gateway, pages)
    page = admin.page
    await login_ui(page, "admin@demo.test")
    await open_admin(page, "Foyers")
    households = page.get_by_role("list", name="Foyers de la structure")
    await households.get_by_role("link", name="Famille Dupont (père)").click()
    await expect(page.get_by_role("heading", level=2, name="Famille Dupont (père)")).to_be_visible()
    await (
        page.get_by_role("region", name="Effacer définitivement")
        .get_by_role("button", name="Effacer définitivement")
        .click()
    )
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("C'est irréversible.")
    await dialog.get_by_role("button", name="Effacer définitivement").click()
    await expect(page.get_by_role("heading", level=2, name="Foyers")).to_be_visible()
    await expect(
        page.locator("#main").get_by_text(
            "Foyer Famille Dupont (père) effacé : 0 message(s) et 0 photo(s) ou vidéo(s) effacés."
        )
    ).to_be_visible()
    await expect(households.get_by_role("link", name="Famille Dupont (mère)")).to_be_visible()
    await expect(households.get_by_role("link", name="Famille Dupont (père)")).to_have_count(0)
