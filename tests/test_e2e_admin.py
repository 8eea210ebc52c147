"""The administration screens, the invitation page and a group's day reports, in Chromium.

Each test runs a real gateway on 127.0.0.1 with the demo data; users log in through the
login form, each in a browser context of their own, and the tests check what they see."""

from __future__ import annotations

import json
import re
from typing import Any

from playwright.async_api import Browser, Page, WebSocketRoute, expect

from tests.conftest import Gateway
from tests.e2e import (
    NEEDS_CHROMIUM,
    UserPage,
    admin_api,
    assert_not_reloaded,
    browser,
    channel_of,
    login_ui,
    mark_page,
    new_page,
    open_admin,
    open_channel,
    pages,
    status,
)

__all__ = ["browser", "pages"]  # the harness's fixtures, used by name

pytestmark = NEEDS_CHROMIUM

NEW_PASSWORD = "Un mot de passe pour Camille 2026"


def entry(page: Page, text: str) -> Any:
    """An entry of the audit log."""
    return page.locator(".audit-entry", has_text=text)


async def test_an_invited_parent_chooses_a_password_and_lands_in_their_household(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    admin = await new_page(browser, gateway, pages)
    await admin.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await login_ui(admin.page, "admin@demo.test")
    await open_admin(admin.page, "Foyers")
    await admin.page.get_by_text("Créer un foyer").click()
    create = admin.page.get_by_role("form", name="Créer un foyer")
    await create.get_by_label("Nom").fill("Famille Petit")
    await create.get_by_role("button", name="Créer").click()
    # The new household's own page opens, where members are added.
    await expect(admin.page.get_by_role("heading", level=2, name="Famille Petit")).to_be_visible()
    add_member = admin.page.get_by_role("form", name="Ajouter un membre")
    await add_member.get_by_label("Adresse e-mail").fill("camille.petit@example.test")
    await add_member.get_by_label("Nom").fill("Camille Petit")
    await add_member.get_by_role("button", name="Ajouter").click()
    await expect(admin.page.get_by_text("Camille Petit est membre du foyer.")).to_be_visible()
    invite = admin.page.get_by_role("button", name="Créer un lien d'invitation pour Camille Petit")
    await expect(invite).to_be_focused()  # the next step for a new account
    await invite.click()
    link_box = admin.page.get_by_label("Lien d'invitation pour Camille Petit", exact=True)
    await expect(link_box).to_have_value(re.compile(rf"^{re.escape(gateway.base)}/#/invite/[\w-]{{20,}}$"))
    link = await link_box.input_value()
    await admin.page.get_by_role("button", name="Copier").click()
    await expect(admin.page.get_by_text("Lien copié.")).to_be_visible()
    assert await admin.page.evaluate("() => navigator.clipboard.readText()") == link

    # Someone else, on their phone, without an account session: the invitation page.
    invited = await new_page(browser, gateway, pages, phone=True)
    await invited.page.goto(link)
    await expect(invited.page.get_by_role("heading", name="Bienvenue, Camille Petit")).to_be_visible()
    await expect(invited.page.get_by_text("Vous êtes invité(e) par Crèche Les Petits Pas.")).to_be_visible()
    await expect(invited.page.get_by_text("Au moins 12 caractères")).to_be_visible()
    await invited.page.get_by_label("Nouveau mot de passe", exact=True).fill("court")
    await invited.page.get_by_label("Confirmez le nouveau mot de passe").fill("court")
    await invited.page.get_by_role("button", name="Enregistrer mon mot de passe").click()
    await expect(invited.page.get_by_role("alert")).to_contain_text("trop faible")
    await invited.page.get_by_label("Nouveau mot de passe", exact=True).fill(NEW_PASSWORD)
    await invited.page.get_by_label("Confirmez le nouveau mot de passe").fill(NEW_PASSWORD)
    await invited.page.get_by_role("button", name="Enregistrer mon mot de passe").click()
    await invited.page.get_by_role("button", name="J'accepte les conditions").click()
    await expect(status(invited.page)).to_have_text("En ligne")
    await expect(invited.page.get_by_role("link", name=re.compile("^Famille Petit"))).to_be_visible()
    assert "/invite/" not in invited.page.url  # the used link left the address bar

    # The link is used up; the new password logs in.
    again = await new_page(browser, gateway, pages, phone=True)
    await again.page.goto(link)
    await expect(again.page.get_by_role("alert")).to_have_text(
        "Ce lien d'invitation n'est plus valable (déjà utilisé, remplacé ou expiré) :"
        " demandez-en un nouveau à la crèche."
    )
    await again.page.get_by_role("link", name="Aller à la connexion").click()
    await login_ui(again.page, "camille.petit@example.test", terms=False, password=NEW_PASSWORD)
    # And the admin, asking again, is told the account is active.
    await invite.click()
    await expect(admin.page.get_by_role("alert")).to_have_text(
        "Ce compte a déjà un mot de passe : la personne se connecte avec."
    )
    # Once the lists are read again, an active account is offered no invitation.
    await admin.page.reload()
    await expect(admin.page.get_by_text("camille.petit@example.test")).to_be_visible()
    await expect(admin.page.get_by_role("button", name="Créer un lien d'invitation pour Camille Petit")).to_have_count(
        0
    )


async def test_an_admin_withdraws_a_guardians_consultation_and_the_audit_log_shows_it(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    father = await new_page(browser, gateway, pages, phone=True)
    await login_ui(father.page, "bernard@demo.test")
    await open_channel(father.page, "Emma Bernard")
    await expect(father.page.get_by_text("Vous n'avez plus accès à cette conversation.")).to_be_hidden()

    admin = await new_page(browser, gateway, pages)
    await login_ui(admin.page, "admin@demo.test")
    await open_admin(admin.page, "Enfants")
    children = admin.page.get_by_role("list", name="Enfants inscrits")
    await expect(children.get_by_role("listitem").filter(has_text="Hugo Dupont")).to_contain_text(
        "Consentement manquant : Marc Dupont"
    )
    await children.get_by_role("link", name="Emma Bernard").click()
    await expect(admin.page.get_by_role("heading", level=2, name="Emma Bernard")).to_be_visible()
    rights = admin.page.get_by_role("form", name="Droits de Paul Bernard")
    consultation = rights.get_by_label("Consultation du fil")
    await expect(consultation).to_be_checked()
    await expect(rights.get_by_label("Autorité parentale")).to_be_checked()
    await expect(rights.get_by_label("Peut écrire à la crèche")).not_to_be_checked()
    await consultation.uncheck()
    await rights.get_by_role("button", name="Enregistrer").click()
    await expect(rights.get_by_role("status")).to_have_text("Enregistré.")
    await expect(rights.get_by_label("Consultation du fil")).not_to_be_checked()  # as the server now says

    # The father's open feed is closed to him at once.
    await expect(father.page.get_by_text("Vous n'avez plus accès à cette conversation.")).to_be_visible()

    await admin.page.get_by_role("link", name="Journal").click()
    await expect(admin.page.get_by_role("heading", level=2, name="Journal")).to_be_focused()
    change = entry(admin.page, "Droits d'un responsable définis")
    await expect(change).to_have_count(1)
    await expect(change).to_contain_text("Par Claire Admin — sujet : Emma Bernard")
    await expect(change).to_contain_text("Personne : Paul Bernard")
    await expect(change).to_contain_text("Consultation du fil : oui → non")
    # The filter by the beginning of the action.
    await admin.page.get_by_label("Action (début)").fill("family.")
    await admin.page.get_by_role("button", name="Filtrer").click()
    await expect(admin.page.get_by_role("status").filter(has_text="entrée")).to_have_text("Aucune entrée.")
    await expect(change).to_have_count(0)
    await admin.page.get_by_label("Action (début)").fill("guardianship.")
    await admin.page.get_by_role("button", name="Filtrer").click()
    await expect(change).to_have_count(1)
    await expect(admin.page.get_by_role("status").filter(has_text="entrée")).to_have_text("1 entrée(s) affichée(s).")


async def test_the_audit_log_pages_back_through_older_entries(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    token = await gateway.login("admin@demo.test")
    api = await admin_api(gateway, token)
    for n in range(1, 53):
        await api("POST", "/groups", {"name": f"Groupe {n:02}"})
    admin = await new_page(browser, gateway, pages)
    await login_ui(admin.page, "admin@demo.test", terms=False)
    await open_admin(admin.page, "Journal")
    entries = admin.page.locator(".audit-entry")
    await expect(entries).to_have_count(50)
    await expect(entries.first).to_contain_text("Groupe 52")  # newest first
    await expect(entry(admin.page, "Groupe 02")).to_have_count(0)
    await admin.page.get_by_role("button", name="Entrées plus anciennes").click()
    await expect(entries).to_have_count(52)
    await expect(entries.last).to_contain_text("Groupe 01")
    await expect(entry(admin.page, "Groupe 02")).to_be_focused()  # the first of the new page
    await expect(admin.page.get_by_role("button", name="Entrées plus anciennes")).to_be_hidden()


async def test_settings_are_saved_and_server_refusals_are_explained(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    admin = await new_page(browser, gateway, pages)
    await login_ui(admin.page, "admin@demo.test")
    await admin.page.get_by_role("link", name="Administration").click()
    await expect(admin.page.get_by_role("heading", level=2, name="Réglages")).to_be_visible()
    retention = admin.page.get_by_label("Durée de conservation des messages (mois)")
    await expect(retention).to_have_value("12")
    await retention.fill("24")
    await admin.page.get_by_label("Les familles peuvent écrire dans leur conversation de foyer").uncheck()
    await admin.page.get_by_role("button", name="Enregistrer").click()
    await expect(admin.page.get_by_role("status").filter(has_text="Enregistré")).to_have_text("Enregistré.")
    token = await gateway.login("admin@demo.test")
    structure = await (await admin_api(gateway, token))("GET", "")
    assert (structure["retention_months"], structure["guardians_may_post"]) == (24, False)

    await open_admin(admin.page, "Groupes")
    await admin.page.get_by_text("Créer un groupe").click()
    create = admin.page.get_by_role("form", name="Créer un groupe")
    await create.get_by_label("Nom").fill("Bébés")
    await create.get_by_role("button", name="Créer").click()
    await expect(create.get_by_role("alert")).to_have_text("Ce nom est déjà utilisé.")

    await open_admin(admin.page, "Équipe")
    claire = admin.page.get_by_role("listitem").filter(has=admin.page.get_by_role("heading", name="Claire Admin"))
    await claire.get_by_role("button", name="Retirer le rôle Administration de Claire Admin").click()
    await admin.page.get_by_role("dialog").get_by_role("button", name="Retirer").click()
    await expect(claire.get_by_role("alert")).to_have_text(
        "C'est le dernier administrateur de la structure : il ne peut pas être retiré."
    )
    await expect(claire).to_contain_text("Rôles : Administration")


async def test_staff_write_the_day_of_two_children_at_once_and_the_parent_sees_theirs(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    api = await admin_api(gateway, await gateway.login("admin@demo.test"))
    [bebes] = [g["id"] for g in await api("GET", "/groups") if g["name"] == "Bébés"]
    await api(
        "POST",
        "/children",
        {"first_name": "Nino", "last_name": "Petit", "group_id": bebes, "enrolled_on": "2026-09-01"},
    )

    parent = await new_page(browser, gateway, pages, phone=True)
    await login_ui(parent.page, "martin@demo.test")
    await open_channel(parent.page, "Léa Martin")
    await mark_page(parent.page)

    staff = await new_page(browser, gateway, pages)
    await login_ui(staff.page, "staff@demo.test")
    await open_channel(staff.page, "Bébés")
    await staff.page.get_by_role("link", name="Journées des enfants").click()
    await expect(staff.page.get_by_role("heading", level=2, name="Journées du groupe Bébés")).to_be_focused()
    lea = staff.page.get_by_role("group", name="Léa Martin", exact=True)
    nino = staff.page.get_by_role("group", name="Nino Petit", exact=True)
    await lea.get_by_label("Humeur").select_option("happy")
    meals = lea.get_by_role("group", name="Repas")
    await meals.get_by_label("Heure").fill("11:30")
    await meals.get_by_label("Plat").fill("Purée de carottes")
    await meals.get_by_label("Quantité").select_option("all")
    await meals.get_by_role("button", name="Ajouter un repas").click()
    await meals.get_by_label("Heure").nth(1).fill("16:00")
    await meals.get_by_label("Plat").nth(1).fill("Compote")
    await meals.get_by_label("Quantité").nth(1).select_option("half")
    await lea.get_by_role("group", name="Siestes").get_by_label("Début").fill("12:45")
    await lea.get_by_role("group", name="Siestes").get_by_label("Fin").fill("14:30")
    await lea.get_by_label("Note").fill("Très curieuse pendant l'atelier peinture.")
    # Nino's nap ends before it starts: his report is refused, Léa's is not held back.
    await nino.get_by_role("group", name="Siestes").get_by_label("Début").fill("13:00")
    await nino.get_by_role("group", name="Siestes").get_by_label("Fin").fill("12:00")
    await nino.get_by_label("Note").fill("Première journée de Nino.")
    await staff.page.get_by_role("button", name="Tout publier").click()

    await expect(lea.get_by_role("status")).to_have_text(re.compile(r"^Journée du .+ publiée\.$"))
    await expect(nino.get_by_role("status")).to_have_text("Une sieste finit après son début.")
    await expect(staff.page.get_by_text("1 journée(s) publiée(s), 1 non publiée(s)")).to_be_visible()
    await expect(lea.get_by_label("Humeur")).to_be_disabled()  # published: not sent twice

    report = parent.page.locator(".messages .daily-report")
    await expect(report).to_have_count(1)
    await expect(report).to_contain_text("Journée de Léa Martin")
    await expect(report).to_contain_text("11:30 – Purée de carottes : tout")
    await expect(report).to_contain_text("16:00 – Compote : la moitié")
    await expect(report).to_contain_text("12:45 – 14:30")
    await expect(report).to_contain_text("joyeuse, joyeux")
    await expect(report).to_contain_text("Très curieuse pendant l'atelier peinture.")

    await nino.get_by_role("group", name="Siestes").get_by_label("Fin").fill("15:00")
    await staff.page.get_by_role("button", name="Tout publier").click()
    await expect(nino.get_by_role("status")).to_have_text(re.compile(r"^Journée du .+ publiée\.$"))
    await expect(staff.page.get_by_text("1 journée(s) publiée(s).")).to_be_visible()

    # Each child's report went to that child's feed only, once.
    await expect(report).to_have_count(1)
    await assert_not_reloaded(parent.page)
    await staff.page.get_by_role("link", name="Messages").click()
    await open_channel(staff.page, "Nino Petit")
    await expect(staff.page.locator(".messages .daily-report")).to_have_count(1)
    await expect(staff.page.locator(".messages .daily-report")).to_contain_text("Première journée de Nino.")
    await expect(staff.page.locator(".messages .daily-report")).to_contain_text("13:00 – 15:00")


async def test_a_report_whose_reply_is_lost_is_published_once(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    parent = await new_page(browser, gateway, pages, phone=True)
    await login_ui(parent.page, "martin@demo.test")
    await open_channel(parent.page, "Léa Martin")

    staff = await new_page(browser, gateway, pages)
    # The server's reply to the first publish never reaches the page: the connection drops
    # right then, as a phone losing coverage would. The page publishes again on the next one.
    cut: dict[str, Any] = {"rids": set(), "done": False}

    async def lose_the_first_publish_reply(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("op") == "publish":
                cut["rids"].add(frame["rid"])
            server.send(message)

        async def from_server(message: str | bytes) -> None:
            frame = json.loads(message)
            if not cut["done"] and frame.get("op") == "reply" and frame.get("rid") in cut["rids"]:
                assert frame["ok"], frame
                cut["done"] = True
                await ws.close(code=4000, reason="test: reply lost")
                return
            ws.send(message)

        ws.on_message(from_page)
        server.on_message(from_server)

    await staff.page.route_web_socket(re.compile(r"/ws$"), lose_the_first_publish_reply)
    bebes = await channel_of(gateway, await gateway.login("staff@demo.test"), "Bébés")
    await login_ui(staff.page, "staff@demo.test", terms=False)
    await staff.page.goto(f"/#/report/{bebes}")
    lea = staff.page.get_by_role("group", name="Léa Martin", exact=True)
    await lea.get_by_label("Humeur").select_option("calm")
    await lea.get_by_label("Note").fill("Une journée calme.")
    await staff.page.get_by_role("button", name="Tout publier").click()
    await expect(lea.get_by_role("status")).to_have_text(re.compile(r"^Journée du .+ publiée\.$"))
    assert cut["done"], "the reply was not cut"

    # Published once: what the parent received live, and what the server keeps.
    report = parent.page.locator(".messages .daily-report")
    await expect(report).to_contain_text("Une journée calme.")
    await staff.page.get_by_role("link", name="Messages").click()
    await open_channel(staff.page, "Léa Martin")
    await expect(staff.page.locator(".messages .daily-report")).to_contain_text("Une journée calme.")
    await expect(staff.page.locator(".messages .daily-report")).to_have_count(1)
    await expect(report).to_have_count(1)


async def test_only_admins_see_the_administration(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    admin = await new_page(browser, gateway, pages)
    await login_ui(admin.page, "admin@demo.test")
    nav = admin.page.get_by_role("navigation", name="Navigation principale")
    await expect(nav.get_by_role("link", name="Administration")).to_be_visible()

    for email, phone in (("staff@demo.test", False), ("martin@demo.test", True)):
        user = await new_page(browser, gateway, pages, phone=phone)
        await login_ui(user.page, email)
        nav = user.page.get_by_role("navigation", name="Navigation principale")
        await expect(nav.get_by_role("link", name="Compte")).to_be_visible()
        await expect(nav.get_by_role("link", name="Administration")).to_have_count(0)
        await user.page.goto("/#/admin/children")
        await expect(user.page.get_by_role("alert")).to_have_text(
            "L'administration est réservée aux administrateurs de la structure."
        )
        await expect(user.page.get_by_role("link", name="Journal")).to_have_count(0)
        await expect(user.page.get_by_text("Inscrire un enfant")).to_have_count(0)
        await expect(user.page.locator(".admin-list, .admin-nav")).to_have_count(0)


async def test_the_invitation_page_refuses_an_unknown_link(
    browser: Browser, gateway: Gateway, pages: list[UserPage]
) -> None:
    visitor = await new_page(browser, gateway, pages, phone=True)
    await visitor.page.goto("/#/invite/" + "x" * 43)
    await expect(visitor.page.get_by_role("alert")).to_contain_text("Ce lien d'invitation n'est plus valable")
    await expect(visitor.page.get_by_label("Nouveau mot de passe", exact=True)).to_have_count(0)
    await visitor.page.get_by_label("Langue").select_option("en")
    await expect(visitor.page.get_by_role("alert")).to_contain_text("This invitation link is no longer valid")
    await visitor.page.get_by_role("link", name="Go to the login").click()
    await expect(visitor.page.get_by_role("button", name="Log in")).to_be_visible()
