"""The web app in a real browser: Debian's Chromium driven by Playwright, against a gateway on
127.0.0.1. Helpers shared by tests/test_e2e.py, and the screenshot script:

    python -m tests.e2e screenshots docs/screenshots

which starts its own servers (DATABASE_URL / REDIS_URL when set, embedded ones otherwise),
seeds the demo with some content and saves the main screens at phone and desktop sizes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from realtime import demo
from realtime.client import Client
from realtime.database import migrate, open_pool
from realtime.embedded import embedded_postgres, embedded_redis
from realtime.passwords import Passwords
from realtime.settings import Settings
from tests.conftest import DEMO_PASSWORD, Gateway, bearer, execute_once, media_worker, running_gateway, with_database
from tests.media_samples import jpeg_with_metadata

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE: dict[str, Any] = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}
# Every wait of a test is bounded by this (ms), unless it says otherwise.
TIMEOUT_MS = 15_000
STATIC = Path(__file__).resolve().parent.parent / "gateway" / "static"
expect.set_options(timeout=TIMEOUT_MS)


@contextlib.asynccontextmanager
async def launch_browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class UserPage:
    """One user's browser context and page, with the JavaScript errors the page raised."""

    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)

    async def close(self) -> None:
        await self.context.close()


async def open_page(browser: Browser, base: str, *, phone: bool = False, locale: str = "fr-FR") -> UserPage:
    context = await browser.new_context(base_url=base, locale=locale, **(PHONE if phone else DESKTOP))
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    user = UserPage(context, page)
    page.on("pageerror", lambda error: user.errors.append(str(error)))
    return user


NEEDS_CHROMIUM = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt install chromium)")


@pytest_asyncio.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with launch_browser() as b:
        yield b


@pytest_asyncio.fixture
async def pages(browser: Browser) -> AsyncIterator[list[UserPage]]:
    """The pages a test opens; closed after it, and none may have raised a JavaScript error."""
    opened: list[UserPage] = []
    yield opened
    for user in opened:
        await user.close()
    errors = [e for user in opened for e in user.errors]
    assert not errors, f"JavaScript errors: {errors}"


async def new_page(browser: Browser, gateway: Gateway, pages: list[UserPage], *, phone: bool = False) -> UserPage:
    user = await open_page(browser, gateway.base, phone=phone)
    pages.append(user)
    return user


def status(page: Page) -> Any:
    """The connection indicator (role=status in the header)."""
    return page.locator("#status")


async def login_ui(page: Page, email: str, *, terms: bool = True, password: str = DEMO_PASSWORD) -> None:
    """Log in through the form; `terms`: the account has not accepted the terms yet."""
    await page.goto("/")
    await page.get_by_label("Adresse e-mail").fill(email)
    await page.get_by_label("Mot de passe").fill(password)
    await page.get_by_role("button", name="Se connecter").click()
    if terms:
        accept = page.get_by_role("button", name="J'accepte les conditions")
        await expect(accept).to_be_enabled()
        await accept.click()
    await expect(status(page)).to_have_text("En ligne")


async def open_channel(page: Page, title: str) -> None:
    await page.get_by_role("link", name=re.compile(f"^{re.escape(title)}")).click()
    await expect(page.get_by_role("heading", level=2, name=title)).to_be_visible()


async def open_admin(page: Page, section: str) -> None:
    """A section of the administration, through the navigation (an admin's page)."""
    await (
        page.get_by_role("navigation", name="Navigation principale").get_by_role("link", name="Administration").click()
    )
    await page.get_by_role("navigation", name="Rubriques de l'administration").get_by_role("link", name=section).click()
    await expect(page.get_by_role("heading", level=2, name=section)).to_be_visible()


AdminApi = Callable[..., Awaitable[Any]]


async def admin_api(gateway: Gateway, token: str) -> AdminApi:
    """call(method, path, body=None): the administration API of the structure `token`'s
    user administers (protocol.md §1.4), asserting success; the JSON answer or None."""
    me = await gateway.me(token)
    [sid] = [r["structure_id"] for r in me["roles"] if r["role"] == "admin"]

    async def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = await gateway.http.request(method, f"/api/structures/{sid}{path}", json=body, headers=bearer(token))
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    return call


async def mark_page(page: Page) -> None:
    """A value that only lives as long as the document: a reload would lose it."""
    await page.evaluate("() => { window.__e2eMark = 'kept' }")


async def assert_not_reloaded(page: Page) -> None:
    assert await page.evaluate("() => window.__e2eMark") == "kept", "the page was reloaded"


async def image_loaded(page: Page, selector: str, timeout_ms: int = TIMEOUT_MS) -> None:
    await page.wait_for_function(
        "(s) => [...document.querySelectorAll(s)].some((i) => i.complete && i.naturalWidth > 0)",
        arg=selector,
        timeout=timeout_ms,
    )


# -- content, through the API as another client would post it ---------------------------------


async def upload_media(gateway: Gateway, token: str, channel: str, path: Path) -> str:
    """Upload a file and wait until it is processed (a media worker must run)."""
    response = await gateway.http.post(
        "/api/media",
        params={"channel": channel},
        files={"file": (path.name, await asyncio.to_thread(path.read_bytes))},
        headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())},
    )
    assert response.status_code in (200, 202), response.text
    media_id: str = response.json()["id"]
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        state = (await gateway.http.get(f"/api/media/{media_id}/status", headers=bearer(token))).json()["state"]
        if state == "ready":
            return media_id
        assert state == "processing", state
        assert asyncio.get_running_loop().time() < deadline, "media not processed in 30 s"
        await asyncio.sleep(0.1)


async def publish(
    gateway: Gateway, token: str, channel: str, body: dict[str, Any], children: list[int] | None = None
) -> dict[str, Any]:
    async with Client.connect(gateway.ws, token) as client:
        fields: dict[str, Any] = {"channel": channel, "msg_id": str(uuid.uuid4()), "body": body}
        if children:
            fields["children"] = children
        return await client.request("publish", **fields)


async def channel_of(gateway: Gateway, token: str, title: str) -> str:
    me = await gateway.me(token)
    [name] = [c["channel"] for c in me["channels"] if c["title"] == title]
    return str(name)


# -- the screenshot script --------------------------------------------------------------------

SHOTS_MAX_BYTES = 300_000


async def seed_content(gateway: Gateway, work: Path) -> dict[str, str]:
    """A household conversation, an announcement, a daily report and a photo of Léa."""
    staff = await gateway.login("staff@demo.test")
    martin = await gateway.login("martin@demo.test")
    await gateway.login("dupont.pere@demo.test")
    await gateway.login("admin@demo.test")
    household = await channel_of(gateway, martin, "Famille Martin")
    lea = await channel_of(gateway, martin, "Léa Martin")
    bebes = await channel_of(gateway, martin, "Bébés")
    lea_id = int(lea.split(":")[1])
    await publish(gateway, staff, household, {"kind": "text", "text": "Bonjour ! Léa est bien arrivée ce matin."})
    await publish(gateway, martin, household, {"kind": "text", "text": "Merci ! Elle a mal dormi cette nuit."})
    await publish(gateway, staff, household, {"kind": "text", "text": "Bien noté, elle fera une sieste tôt."})
    await publish(
        gateway,
        staff,
        bebes,
        {"kind": "announcement", "title": "Sortie au parc", "text": "Jeudi matin, pensez aux chapeaux."},
    )
    report = {
        "kind": "daily_report",
        "child": lea_id,
        "date": "2026-09-14",
        "mood": "happy",
        "meals": [{"time": "11:30", "food": "purée de carottes", "amount": "all"}],
        "naps": [{"start": "12:45", "end": "14:30"}],
        "nappies": [{"time": "10:00", "kind": "wet"}],
        "note": "Très curieuse pendant l'atelier peinture.",
    }
    await publish(gateway, staff, lea, report)
    photo = jpeg_with_metadata(work / "peinture.jpg", size=(1200, 900), orientation=1)
    media = await upload_media(gateway, staff, lea, photo)
    await publish(gateway, staff, lea, {"kind": "media", "media": [media], "text": "Atelier peinture"}, [lea_id])
    # A message of the household, reported by the mother: a case in the moderation queue.
    reported = await publish(gateway, staff, household, {"kind": "text", "text": "Photo du groupe à la piscine"})
    filed = await gateway.http.post(
        "/api/reports",
        json={"channel": household, "id": reported["id"], "reason": "Un autre enfant est reconnaissable"},
        headers=bearer(martin),
    )
    assert filed.status_code == 201, filed.text
    return {"household": "Famille Martin", "lea": "Léa Martin", "grands": "Grands"}


async def shoot(page: Page, out: Path, name: str) -> Path:
    path = out / f"{name}.png"
    await page.screenshot(path=str(path), animations="disabled")
    assert path.stat().st_size <= SHOTS_MAX_BYTES, f"{path} is {path.stat().st_size} bytes"
    return path


async def take_screenshots(gateway: Gateway, browser: Browser, out: Path) -> list[Path]:
    saved: list[Path] = []
    for size, phone in (("phone", True), ("desktop", False)):
        visitor = await open_page(browser, gateway.base, phone=phone)
        await visitor.page.goto("/")
        await expect(visitor.page.get_by_role("button", name="Se connecter")).to_be_visible()
        saved.append(await shoot(visitor.page, out, f"login-{size}"))
        await visitor.close()

        parent = await open_page(browser, gateway.base, phone=phone)
        await login_ui(parent.page, "martin@demo.test", terms=False)
        await open_channel(parent.page, "Léa Martin")
        await image_loaded(parent.page, ".messages img")
        await parent.page.locator(".messages img").scroll_into_view_if_needed()
        saved.append(await shoot(parent.page, out, f"parent-feed-{size}"))
        await parent.page.goto("/#/")
        await open_channel(parent.page, "Famille Martin")
        await expect(parent.page.get_by_text("Bien noté")).to_be_visible()
        saved.append(await shoot(parent.page, out, f"household-{size}"))
        await parent.close()

        father = await open_page(browser, gateway.base, phone=phone)
        await login_ui(father.page, "dupont.pere@demo.test", terms=False)
        await father.page.get_by_role("link", name="Mes enfants").click()
        await father.page.get_by_role("link", name="Consentement à la publication").click()
        await expect(father.page.get_by_label("J'ai lu cette déclaration et je la signe")).to_be_visible()
        saved.append(await shoot(father.page, out, f"consent-{size}"))
        await father.close()

        staff = await open_page(browser, gateway.base, phone=phone)
        await login_ui(staff.page, "staff@demo.test", terms=False)
        await open_channel(staff.page, "Grands")
        blocked = staff.page.get_by_text("Consentement manquant : Marc Dupont")
        await expect(blocked).to_be_visible()
        await blocked.scroll_into_view_if_needed()
        saved.append(await shoot(staff.page, out, f"staff-compose-{size}"))
        await staff.page.get_by_role("link", name="Journées des enfants").click()
        await fill_a_day(staff.page)
        saved.append(await shoot(staff.page, out, f"daily-reports-{size}"))
        await staff.page.get_by_role("link", name="Modération").click()
        await expect(staff.page.get_by_text("Un autre enfant est reconnaissable")).to_be_visible()
        saved.append(await shoot(staff.page, out, f"moderation-{size}"))
        await staff.close()

        admin = await open_page(browser, gateway.base, phone=phone)
        await login_ui(admin.page, "admin@demo.test", terms=False)
        await open_admin(admin.page, "Enfants")
        children = admin.page.get_by_role("list", name="Enfants inscrits")
        await expect(children).to_contain_text("Consentement manquant : Marc Dupont")
        saved.append(await shoot(admin.page, out, f"admin-children-{size}"))
        await admin.close()
    return saved


async def fill_a_day(page: Page) -> None:
    """Emma's day on the day reports page of her group, half written."""
    emma = page.get_by_role("group", name="Emma Bernard", exact=True)
    await emma.get_by_label("Humeur").select_option("happy")
    meals = emma.get_by_role("group", name="Repas")
    await meals.get_by_label("Heure").fill("11:30")
    await meals.get_by_label("Plat").fill("Gratin de légumes")
    await meals.get_by_label("Quantité").select_option("most")
    naps = emma.get_by_role("group", name="Siestes")
    await naps.get_by_label("Début").fill("13:00")
    await naps.get_by_label("Fin").fill("14:45")
    await emma.get_by_role("group", name="Changes").get_by_label("Heure").fill("10:15")
    await emma.get_by_role("group", name="Changes").get_by_label("Type").select_option("wet")
    await page.evaluate("() => document.activeElement?.blur()")
    await page.get_by_role("heading", level=2).scroll_into_view_if_needed()


def script_settings(database_url: str, redis_url: str, data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=f"shots{secrets.token_hex(4)}",
        demo_password=DEMO_PASSWORD,
    )


@contextlib.asynccontextmanager
async def demo_gateway(work: Path) -> AsyncIterator[Gateway]:
    """A gateway and a media worker on a database of its own, with the demo seeded (for the
    screenshot script and manual checks): DATABASE_URL / REDIS_URL when set, embedded
    servers otherwise."""
    async with contextlib.AsyncExitStack() as stack:
        base_db = os.environ.get("DATABASE_URL")
        if not base_db:
            base_db = await stack.enter_async_context(embedded_postgres(work / "pg"))
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            redis_url = await stack.enter_async_context(embedded_redis(work / "redis"))
        name = f"procreche_shots_{secrets.token_hex(4)}"
        await execute_once(base_db, f'CREATE DATABASE "{name}"')
        try:
            url = with_database(base_db, name)
            async with open_pool(url, max_size=1) as pool:
                await migrate(pool)
            settings = script_settings(url, redis_url, work / "data")
            async with running_gateway(settings) as gateway, media_worker(gateway):
                for logger in ("uvicorn.access", "uvicorn.error"):
                    logging.getLogger(logger).setLevel(logging.WARNING)
                await demo.seed(gateway.services.pool, Passwords(), DEMO_PASSWORD)
                yield gateway
        finally:
            await execute_once(base_db, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def screenshots(out: Path) -> list[Path]:
    with tempfile.TemporaryDirectory(prefix="procreche-shots-") as tmp:
        work = Path(tmp)
        async with demo_gateway(work) as gateway:
            await seed_content(gateway, work)
            async with launch_browser() as browser:
                return await take_screenshots(gateway, browser, out)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "screenshots":
        print("usage: python -m tests.e2e screenshots <directory>", file=sys.stderr)
        return 2
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is missing (apt install chromium)", file=sys.stderr)
        return 1
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(screenshots(out)):
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
