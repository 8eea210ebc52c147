"""Data rights in Chromium: a parent reports a message with a reason, staff see the case
arrive in their queue live, withdraw or dismiss it, and the parent is told; a parent
exports their data and downloads the zip."""

from __future__ import annotations

import json
import zipfile

from playwright.async_api import Browser, expect

from tests.conftest import Gateway, export_worker
from tests.e2e import (
    NEEDS_CHROMIUM,
    UserPage,
    browser,
    channel_of,
    login_ui,
    new_page,
    open_channel,
    pages,
    publish,
)

__all__ = ["browser", "pages"]  # the harness's fixtures, used by name

pytestmark = NEEDS_CHROMIUM


async def test_a_report_reaches_the_queue_live_and_the_parent_hears_the_outcome(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    staff_token = await gateway.login("staff@demo.test")
    martin_token = await gateway.login("martin@demo.test")
    household = await channel_of(gateway, martin_token, "Famille Martin")
    await publish(gateway, staff_token, household, {"kind": "text", "text": "Photo de groupe à la piscine"})
    await publish(gateway, staff_token, household, {"kind": "text", "text": "Bonne soirée"})

    staff = await new_page(browser, gateway, pages)
    await login_ui(staff.page, "staff@demo.test", terms=False)
    nav = staff.page.get_by_role("navigation", name="Navigation principale")
    await expect(nav.get_by_role("link", name="Modération")).to_be_visible()

    parent = await new_page(browser, gateway, pages, phone=True)
    await login_ui(parent.page, "martin@demo.test", terms=False)
    await open_channel(parent.page, "Famille Martin")
    reported = parent.page.locator(".messages > li", has_text="Photo de groupe à la piscine")
    await reported.get_by_role("button", name="Signaler").click()
    dialog = parent.page.get_by_role("dialog", name="Signaler ce message")
    # A report says why: an empty reason is refused in the page.
    await dialog.get_by_role("button", name="Envoyer le signalement").click()
    await expect(dialog.get_by_role("alert")).to_have_text("Dites en quelques mots pourquoi.")
    await dialog.get_by_label("Pourquoi signalez-vous ce message ?").fill("Un autre enfant est reconnaissable")
    await dialog.get_by_role("button", name="Envoyer le signalement").click()
    await expect(reported.get_by_role("status")).to_have_text("Signalement envoyé : l'équipe va l'examiner.")

    # The staff's page counts the case without being reloaded, and shows it in the queue.
    await expect(nav.get_by_role("link", name="Modération 1 en attente")).to_be_visible()
    await nav.get_by_role("link", name="Modération").click()
    case = staff.page.get_by_role("listitem").filter(has_text="Photo de groupe à la piscine")
    await expect(case.get_by_role("heading")).to_have_text("Signalé 1 fois · Famille Martin")
    await expect(case.get_by_role("list", name="Raisons données")).to_contain_text(
        "Un autre enfant est reconnaissable — Julie Martin"
    )
    await case.get_by_role("button", name="Retirer le message").click()
    await staff.page.get_by_role("dialog").get_by_role("button", name="Retirer le message").click()
    await expect(staff.page.get_by_text("Aucun signalement en attente.")).to_be_visible()
    await expect(nav.get_by_role("link", name="Modération", exact=True)).to_be_visible()

    # The parent: the message is gone, the outcome is told, and kept in their account.
    await expect(parent.page.locator(".messages .text")).to_have_text(["Bonne soirée"])
    await expect(parent.page.locator(".toast")).to_have_text("Suite à votre signalement, l'équipe a retiré le message.")
    await parent.page.get_by_role("link", name="Compte").click()
    await expect(parent.page.locator(".my-reports li")).to_contain_text(
        ["Un autre enfant est reconnaissable — message retiré"]
    )


async def test_staff_dismiss_a_report_and_the_message_stays(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    staff_token = await gateway.login("staff@demo.test")
    martin_token = await gateway.login("martin@demo.test")
    household = await channel_of(gateway, martin_token, "Famille Martin")
    message = await publish(gateway, staff_token, household, {"kind": "text", "text": "Menu de la semaine"})
    response = await gateway.http.post(
        "/api/reports",
        json={"channel": household, "id": message["id"], "reason": "Erreur de menu"},
        headers={"Authorization": f"Bearer {martin_token}"},
    )
    assert response.status_code == 201, response.text

    parent = await new_page(browser, gateway, pages, phone=True)
    await login_ui(parent.page, "martin@demo.test", terms=False)
    staff = await new_page(browser, gateway, pages)
    await login_ui(staff.page, "staff@demo.test", terms=False)
    await staff.page.goto("/#/moderation")
    case = staff.page.get_by_role("listitem").filter(has_text="Menu de la semaine")
    await case.get_by_role("button", name="Classer sans suite").click()
    await expect(staff.page.get_by_text("Aucun signalement en attente.")).to_be_visible()

    await expect(parent.page.locator(".toast")).to_have_text(
        "L'équipe a examiné votre signalement et a laissé le message en place."
    )
    await open_channel(parent.page, "Famille Martin")
    await expect(parent.page.locator(".messages .text")).to_have_text(["Menu de la semaine"])


async def test_a_parent_exports_their_data_and_downloads_the_zip(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    parent = await new_page(browser, gateway, pages, phone=True)
    await login_ui(parent.page, "martin@demo.test")
    await parent.page.get_by_role("link", name="Compte").click()
    mine = parent.page.get_by_role("list", name="Exports demandés")
    async with export_worker(gateway):
        await parent.page.get_by_role("button", name="Exporter mes données").click()
        # Built by the worker, the export turns ready on the page without a reload.
        await expect(mine.get_by_role("listitem")).to_contain_text("prêt")
    async with parent.page.expect_download() as downloading:
        await mine.get_by_role("button", name="Télécharger").click()
    download = await downloading.value
    with zipfile.ZipFile(await download.path()) as archive:
        document = json.loads(archive.read("export.json"))
    assert document["scope"] == "me"
    assert document["format"] == "procreche-export"
