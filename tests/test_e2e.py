"""The web app (gateway/static) end to end, in Chromium: what staff and parents see, live.

Each test runs a real gateway on 127.0.0.1 with the demo data; users log in through the
login form, each in a browser context of their own (parents on a phone-sized screen)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from playwright.async_api import Browser, WebSocketRoute, expect

from realtime.client import Client
from realtime.errors import CloseCode
from tests.conftest import DEMO_PASSWORD, Gateway, bearer, media_worker
from tests.e2e import (
    NEEDS_CHROMIUM,
    STATIC,
    UserPage,
    assert_not_reloaded,
    browser,
    channel_of,
    image_loaded,
    login_ui,
    mark_page,
    new_page,
    open_channel,
    pages,
    publish,
    status,
    upload_media,
)
from tests.media_samples import jpeg_with_metadata

__all__ = ["browser", "pages"]  # the harness's fixtures, used by name

pytestmark = NEEDS_CHROMIUM


async def on_channel(
    browser: Browser, gateway: Gateway, pages: list[UserPage], email: str, channel: str, *, phone: bool = False
) -> UserPage:
    """A user's page, logged in through the form, open on a channel."""
    user = await new_page(browser, gateway, pages, phone=phone)
    await login_ui(user.page, email)
    await open_channel(user.page, channel)
    return user


async def test_staff_photo_appears_live_on_the_parent_phone(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage], tmp_path: Path
) -> None:
    parent = await new_page(browser, gateway, pages, phone=True)
    await login_ui(parent.page, "martin@demo.test")  # first login: the terms gate too
    # Phone layout: the channel list first, then the conversation alone with a way back.
    await open_channel(parent.page, "Léa Martin")
    await expect(parent.page.get_by_role("navigation", name="Conversations")).to_be_hidden()
    await expect(parent.page.get_by_role("link", name="Conversations")).to_be_visible()
    await mark_page(parent.page)

    staff = await on_channel(browser, gateway, pages, "staff@demo.test", "Léa Martin")
    photo = jpeg_with_metadata(tmp_path / "peinture.jpg", size=(800, 600))
    async with media_worker(gateway):
        await staff.page.get_by_label("Ajouter des photos ou des vidéos").set_input_files(photo)
        await expect(staff.page.get_by_text("Prêt")).to_be_visible(timeout=30_000)
        await staff.page.get_by_label("Légende (facultative)").fill("Atelier peinture")
        await staff.page.get_by_role("checkbox", name="Léa Martin").check()
        await staff.page.get_by_role("button", name="Publier").click()

        photo_on_phone = parent.page.locator(".messages img")
        await expect(photo_on_phone).to_be_visible()
        await expect(photo_on_phone).to_have_attribute("src", re.compile(r"/media/"))
        await image_loaded(parent.page, ".messages img")
    await expect(parent.page.get_by_text("Atelier peinture")).to_be_visible()
    await assert_not_reloaded(parent.page)

    # The full-screen viewer: a modal dialog that Escape closes.
    await photo_on_phone.click()
    viewer = parent.page.get_by_role("dialog", name="Visionneuse")
    await expect(viewer).to_be_visible()
    await image_loaded(parent.page, "dialog img")
    await parent.page.keyboard.press("Escape")
    await expect(viewer).to_be_hidden()


async def test_a_child_without_complete_consent_cannot_be_tagged(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    staff = await on_channel(browser, gateway, pages, "staff@demo.test", "Grands")
    hugo = staff.page.get_by_role("checkbox", name="Hugo Dupont")
    await expect(hugo).to_be_disabled()
    await expect(staff.page.get_by_text("Consentement manquant : Marc Dupont")).to_be_visible()
    # Only the child whose consent is incomplete is blocked.
    await expect(staff.page.get_by_role("checkbox", name="Emma Bernard")).to_be_enabled()
    # Only the group's own children are offered: Léa is in Bébés.
    await expect(staff.page.get_by_role("checkbox", name="Louis Bernard")).to_be_enabled()
    await expect(staff.page.get_by_role("checkbox", name="Léa Martin")).to_have_count(0)


async def test_staff_see_a_child_become_taggable_when_the_father_signs(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    staff = await on_channel(browser, gateway, pages, "staff@demo.test", "Grands")
    hugo = staff.page.get_by_role("checkbox", name="Hugo Dupont")
    await expect(hugo).to_be_disabled()
    await mark_page(staff.page)

    father = await new_page(browser, gateway, pages, phone=True)
    await login_ui(father.page, "dupont.pere@demo.test")
    await father.page.get_by_role("link", name="Mes enfants").click()
    await father.page.get_by_role("link", name="Consentement à la publication").click()
    await expect(father.page.get_by_text("Marc Dupont : n'a pas consenti")).to_be_visible()
    sign = father.page.get_by_role("button", name="Signer le consentement")
    await expect(sign).to_be_disabled()  # the declaration must be ticked first
    await father.page.get_by_label("J'ai lu cette déclaration et je la signe").check()
    await sign.click()
    await expect(father.page.get_by_text("Marc Dupont : a consenti")).to_be_visible()

    await expect(hugo).to_be_enabled()
    await expect(staff.page.get_by_text("Consentement manquant : Marc Dupont")).to_be_hidden()
    await hugo.check()

    # And back: the father withdraws his consent (confirmed in a dialog); the tag goes away.
    await father.page.get_by_role("button", name="Retirer mon consentement").click()
    await father.page.get_by_role("dialog").get_by_role("button", name="Retirer mon consentement").click()
    await expect(father.page.get_by_text("Marc Dupont : n'a pas consenti")).to_be_visible()
    await expect(hugo).to_be_disabled()
    await expect(hugo).not_to_be_checked()
    await expect(staff.page.get_by_text("Consentement manquant : Marc Dupont")).to_be_visible()
    await assert_not_reloaded(staff.page)


async def test_publishing_is_refused_with_the_servers_reason_when_consent_is_missing(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    father_token = await gateway.login("dupont.pere@demo.test")
    mother_token = await gateway.login("dupont.mere@demo.test")
    [hugo] = (await gateway.me(father_token))["children"]
    signed = await gateway.http.post(
        f"/api/children/{hugo['id']}/consent", json={"declare": True}, headers=bearer(father_token)
    )
    assert signed.status_code == 201, signed.text

    staff = await new_page(browser, gateway, pages)

    # The page misses the `consent` events (as one missed while away would be): only the
    # server's refusal can tell it that Hugo is no longer taggable.
    def without_consent_events(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        server.on_message(lambda message: None if '"op":"consent"' in str(message) else ws.send(message))

    await staff.page.route_web_socket(re.compile(r"/ws$"), without_consent_events)
    await login_ui(staff.page, "staff@demo.test")
    await open_channel(staff.page, "Grands")
    hugo_box = staff.page.get_by_role("checkbox", name="Hugo Dupont")
    await expect(hugo_box).to_be_enabled()
    revoked = await gateway.http.delete(f"/api/children/{hugo['id']}/consent", headers=bearer(mother_token))
    assert revoked.status_code == 200, revoked.text

    await hugo_box.check()
    await staff.page.get_by_role("textbox", name="Message", exact=True).fill("Hugo a fait un château de sable.")
    await staff.page.get_by_role("button", name="Publier").click()
    await expect(staff.page.get_by_role("alert")).to_have_text(
        "Publication refusée : consentement manquant pour Hugo Dupont (Anne Dupont)."
    )
    await expect(staff.page.locator(".messages .text")).to_have_count(0)


async def test_a_dropped_connection_resumes_without_losing_or_repeating_a_message(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    staff_token = await gateway.login("staff@demo.test")
    martin_token = await gateway.login("martin@demo.test")
    martin_id = (await gateway.me(martin_token))["user"]["id"]
    household = await channel_of(gateway, martin_token, "Famille Martin")
    await publish(gateway, staff_token, household, {"kind": "text", "text": "Avant la coupure"})

    parent = await new_page(browser, gateway, pages, phone=True)
    # The page's WebSockets go through this route: while the network is "down", every
    # attempt to reconnect is cut at once, as a phone without coverage would see it.
    # (Chromium's offline emulation does not stop WebSockets to 127.0.0.1.)
    network = {"down": False}

    async def through_the_network(ws: WebSocketRoute) -> None:
        if network["down"]:
            await ws.close(code=CloseCode.SERVICE_RESTART, reason="no network")
        else:
            ws.connect_to_server()

    await parent.page.route_web_socket(re.compile(r"/ws$"), through_the_network)
    await login_ui(parent.page, "martin@demo.test", terms=False)
    await open_channel(parent.page, "Famille Martin")
    texts = parent.page.locator(".messages .text")
    await expect(texts).to_have_text(["Avant la coupure"])
    await mark_page(parent.page)

    # The network goes away and the connection with it.
    network["down"] = True
    sessions = list(gateway.services.sessions.of_user(martin_id))
    assert sessions, "the page has no live connection"
    for session in sessions:
        session.close(CloseCode.SERVICE_RESTART, "test: connection dropped")
    await expect(status(parent.page)).to_have_text("Reconnexion…")

    async with Client.connect(gateway.ws, staff_token) as staff:
        for n in (1, 2, 3):
            await staff.publish(household, f"Pendant la coupure {n}", msg_id=str(uuid.uuid4()))
    await expect(status(parent.page)).to_have_text("Reconnexion…")
    await expect(texts).to_have_text(["Avant la coupure"])

    network["down"] = False
    await expect(status(parent.page)).to_have_text("En ligne")
    await expect(texts).to_have_text(
        ["Avant la coupure", "Pendant la coupure 1", "Pendant la coupure 2", "Pendant la coupure 3"]
    )
    await assert_not_reloaded(parent.page)


async def test_household_conversation_with_read_state_and_unread_badges(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    parent = await on_channel(browser, gateway, pages, "martin@demo.test", "Famille Martin", phone=True)
    await parent.page.get_by_role("textbox", name="Message", exact=True).fill("Léa a un peu de fièvre ce matin.")
    await parent.page.get_by_role("button", name="Envoyer").click()
    await expect(parent.page.locator(".messages .text")).to_have_text(["Léa a un peu de fièvre ce matin."])

    staff = await new_page(browser, gateway, pages)
    await login_ui(staff.page, "staff@demo.test")
    household = staff.page.get_by_role("link", name=re.compile("^Famille Martin"))
    await expect(household).to_contain_text("1 non lu(s)")
    await open_channel(staff.page, "Famille Martin")
    await expect(household).not_to_contain_text("non lu")
    # Staff opened it: the parent sees it was read.
    await expect(parent.page.get_by_text("Vu par Sophie Éducatrice")).to_be_visible()

    await staff.page.get_by_role("textbox", name="Message", exact=True).fill("Merci, nous la surveillons.")
    await staff.page.get_by_role("button", name="Publier").click()
    await expect(parent.page.locator(".messages .text")).to_have_text(
        ["Léa a un peu de fièvre ce matin.", "Merci, nous la surveillons."]
    )
    # A message elsewhere while the parent reads the household: a badge on that channel.
    await staff.page.get_by_role("link", name=re.compile("^Bébés")).click()
    await staff.page.get_by_role("textbox", name="Message", exact=True).fill("Les Bébés ont fait de la peinture.")
    await staff.page.get_by_role("button", name="Publier").click()
    await parent.page.get_by_role("link", name="Conversations").click()
    await expect(parent.page.get_by_role("link", name=re.compile("^Bébés"))).to_contain_text("1 non lu(s)")


async def test_a_guardian_who_may_not_post_is_told_why(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    parent = await on_channel(browser, gateway, pages, "bernard@demo.test", "Famille Bernard", phone=True)
    await expect(parent.page.get_by_text("La crèche n'a pas autorisé votre compte à écrire")).to_be_visible()
    await expect(parent.page.get_by_role("button", name="Envoyer")).to_have_count(0)


async def test_announcements_are_acknowledged_and_staff_see_who_read_them(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    staff = await on_channel(browser, gateway, pages, "staff@demo.test", "Bébés")
    await staff.page.get_by_label("C'est une annonce").check()
    await staff.page.get_by_label("Titre de l'annonce").fill("Sortie au parc")
    await staff.page.get_by_label("Texte de l'annonce").fill("Jeudi matin, pensez aux chapeaux.")
    await staff.page.get_by_role("button", name="Publier").click()
    await expect(staff.page.get_by_role("heading", name="Sortie au parc")).to_be_visible()

    parent = await on_channel(browser, gateway, pages, "martin@demo.test", "Bébés", phone=True)
    await parent.page.get_by_role("button", name="J'ai lu cette annonce").click()
    await expect(parent.page.get_by_text("Lecture confirmée")).to_be_visible()
    # Another visit knows it from the server: the announcement stays acknowledged.
    await parent.page.reload()  # back on the same channel (its address)
    await expect(parent.page.get_by_text("Lecture confirmée")).to_be_visible()
    await expect(parent.page.get_by_role("button", name="J'ai lu cette annonce")).to_have_count(0)

    await staff.page.get_by_role("button", name="Qui a lu ?").click()
    await expect(staff.page.get_by_role("list", name="Lecteurs de l'annonce")).to_contain_text("Julie Martin")


async def test_a_withdrawn_message_disappears_for_families_and_stays_marked_for_staff(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    staff_token = await gateway.login("staff@demo.test")
    martin_token = await gateway.login("martin@demo.test")
    household = await channel_of(gateway, martin_token, "Famille Martin")
    await publish(gateway, staff_token, household, {"kind": "text", "text": "Message envoyé par erreur"})
    await publish(gateway, staff_token, household, {"kind": "text", "text": "Le bon message"})

    parent = await new_page(browser, gateway, pages, phone=True)
    await login_ui(parent.page, "martin@demo.test", terms=False)
    await open_channel(parent.page, "Famille Martin")
    await expect(parent.page.locator(".messages .text")).to_have_text(["Message envoyé par erreur", "Le bon message"])
    staff = await new_page(browser, gateway, pages)
    await login_ui(staff.page, "staff@demo.test", terms=False)
    await open_channel(staff.page, "Famille Martin")
    wrong = staff.page.locator(".messages > li", has_text="Message envoyé par erreur")
    await wrong.get_by_role("button", name="Retirer").click()
    await staff.page.get_by_role("dialog").get_by_role("button", name="Retirer").click()

    await expect(parent.page.locator(".messages .text")).to_have_text(["Le bon message"])
    await expect(wrong).to_contain_text("Message retiré")


async def test_the_service_worker_caches_only_the_app_shell(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage], tmp_path: Path
) -> None:
    staff_token = await gateway.login("staff@demo.test")
    martin_token = await gateway.login("martin@demo.test")
    lea = await channel_of(gateway, martin_token, "Léa Martin")
    async with media_worker(gateway):
        media = await upload_media(gateway, staff_token, lea, jpeg_with_metadata(tmp_path / "a.jpg"))
    await publish(gateway, staff_token, lea, {"kind": "media", "media": [media]}, [int(lea.split(":")[1])])

    parent = await new_page(browser, gateway, pages, phone=True)
    await login_ui(parent.page, "martin@demo.test", terms=False)
    await parent.page.evaluate("() => navigator.serviceWorker.ready")
    # Once the worker controls the page, every request of the app goes through it.
    await parent.page.reload()
    assert await parent.page.evaluate("() => navigator.serviceWorker.controller !== null")
    await expect(status(parent.page)).to_have_text("En ligne")
    await open_channel(parent.page, "Léa Martin")
    await image_loaded(parent.page, ".messages img")
    await parent.page.locator(".messages img").click()
    await image_loaded(parent.page, "dialog img")
    await parent.page.keyboard.press("Escape")
    await parent.page.get_by_role("link", name="Mes enfants").click()
    await parent.page.get_by_role("link", name="Consentement à la publication").click()
    await expect(parent.page.get_by_text("Julie Martin : a consenti")).to_be_visible()

    cached: list[str] = await parent.page.evaluate(
        """async () => {
            const urls = [];
            for (const name of await caches.keys()) {
                for (const request of await (await caches.open(name)).keys()) urls.push(request.url);
            }
            return urls;
        }"""
    )
    paths = {re.sub(r"^https?://[^/]+", "", url) for url in cached}
    assert "/js/app.js" in paths, paths
    assert paths <= shell_list(), paths - shell_list()
    assert not [p for p in paths if p.startswith(("/api", "/media", "/ws")) or "?" in p]


async def test_password_change_and_logout(
    browser: Browser, gateway: Gateway, demo_families: dict[str, int], pages: list[UserPage]
) -> None:
    parent = await new_page(browser, gateway, pages, phone=True)
    await login_ui(parent.page, "martin@demo.test")
    await parent.page.get_by_role("link", name="Compte").click()
    await parent.page.get_by_label("Mot de passe actuel").fill(DEMO_PASSWORD)
    await parent.page.get_by_label("Nouveau mot de passe", exact=True).fill("court")
    await parent.page.get_by_label("Confirmez le nouveau mot de passe").fill("court")
    await parent.page.get_by_role("button", name="Changer le mot de passe").click()
    await expect(parent.page.get_by_role("alert")).to_contain_text("trop faible")

    new_password = "Une comptine pour Léa 2026"
    await parent.page.get_by_label("Nouveau mot de passe", exact=True).fill(new_password)
    await parent.page.get_by_label("Confirmez le nouveau mot de passe").fill(new_password)
    await parent.page.get_by_role("button", name="Changer le mot de passe").click()
    await expect(parent.page.get_by_text("Mot de passe changé")).to_be_visible()

    await parent.page.get_by_role("button", name="Se déconnecter").click()
    await expect(parent.page.get_by_role("button", name="Se connecter")).to_be_visible()
    await expect(status(parent.page)).to_be_hidden()
    assert await parent.page.evaluate("() => Object.keys(localStorage)") in ([], ["lang"])
    await login_ui(parent.page, "martin@demo.test", terms=False, password=new_password)


def shell_list() -> set[str]:
    source = (STATIC / "sw.js").read_text(encoding="utf-8")
    block = re.search(r"const SHELL = \[(.*?)\];", source, re.S)
    assert block is not None
    return set(re.findall(r'"([^"]+)"', block.group(1)))


def test_the_shell_list_is_every_static_file() -> None:
    files = {"/" + str(p.relative_to(STATIC)) for p in STATIC.rglob("*") if p.is_file() and p.name != "sw.js"}
    assert shell_list() == files | {"/"}


# -- translations --------------------------------------------------------------------------


def table(language: str) -> dict[str, str]:
    source = (STATIC / "js" / "i18n.js").read_text(encoding="utf-8")
    block = re.search(rf"^  {language}: \{{\n(.*?)^  \}},$", source, re.S | re.M)
    assert block is not None, f"no {language} table in i18n.js"
    entries = re.findall(r'^    "([^"]+)": "((?:[^"\\]|\\.)*)",$', block.group(1), re.M)
    assert len(entries) == block.group(1).count("\n"), "an entry of the table is not on a line of its own"
    return dict(entries)


def keys_used() -> set[str]:
    used: set[str] = set()
    for path in [*STATIC.rglob("*.js"), STATIC / "index.html"]:
        # Comments may quote the convention itself: t("…").
        source = re.sub(r"^\s*//.*$", "", path.read_text(encoding="utf-8"), flags=re.M)
        used |= set(re.findall(r"\b(?:t|N_)\(\s*\"([^\"]+)\"", source))
        used |= {f"error.{code}" for code in re.findall(r"\berrorText\(\s*\"([^\"]+)\"", source)}
        used |= set(re.findall(r"data-i18n(?:-label)?=\"([^\"]+)\"", source))
    return used


def test_every_string_used_is_translated_in_french_and_english() -> None:
    french, english = table("fr"), table("en")
    used = keys_used()
    assert len(used) > 100
    assert not used - french.keys(), f"missing in fr: {sorted(used - french.keys())}"
    assert not used - english.keys(), f"missing in en: {sorted(used - english.keys())}"
    assert french.keys() == english.keys(), sorted(french.keys() ^ english.keys())
    assert all(value.strip() for value in [*french.values(), *english.values()])
    # Placeholders are the same in both languages.
    for key in french:
        assert set(re.findall(r"\{\w+\}", french[key])) == set(re.findall(r"\{\w+\}", english[key])), key
    # Keys are never built at run time, except error codes (errorText falls back to a generic text).
    for path in STATIC.rglob("*.js"):
        dynamic = re.findall(r"\bt\(\s*`", path.read_text(encoding="utf-8"))
        assert not dynamic, f"{path}: a key built at run time cannot be checked"


async def test_the_language_can_be_switched_to_english(
    browser: Browser, gateway: Gateway, pages: list[UserPage]
) -> None:
    visitor = await new_page(browser, gateway, pages)
    await visitor.page.goto("/")
    assert await visitor.page.evaluate("() => document.documentElement.lang") == "fr"
    await visitor.page.get_by_label("Langue").select_option("en")
    await expect(visitor.page.get_by_role("button", name="Log in")).to_be_visible()
    assert await visitor.page.evaluate("() => document.documentElement.lang") == "en"
    await visitor.page.reload()  # the choice is kept
    await expect(visitor.page.get_by_label("Email address")).to_be_visible()
