"""Maintenance mode in Chromium: a parent on the app sees the operator's message as soon as
it starts, a page opened meanwhile says so instead of failing, and when it ends the app
comes back by itself and resumes the conversation without a gap."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest_asyncio
from playwright.async_api import Browser, expect

from realtime import maintenance
from realtime.client import Client
from realtime.settings import Settings
from tests.conftest import Gateway, running_gateway, wait_for
from tests.e2e import NEEDS_CHROMIUM, UserPage, browser, channel_of, login_ui, new_page, open_channel, pages, status

__all__ = ["browser", "pages"]  # the harness's fixtures, used by name

pytestmark = NEEDS_CHROMIUM

MESSAGE = "Mise à jour de procreche : retour vers 14 h."


@pytest_asyncio.fixture
async def quick(settings: Settings, demo_families: dict[str, int]) -> AsyncIterator[Gateway]:
    """A gateway that moves its clients off within half a second."""
    async with running_gateway(dataclasses.replace(settings, drain_grace_seconds=0.5)) as gw:
        yield gw


async def test_a_parent_sees_the_maintenance_and_the_app_comes_back_by_itself(
    browser: Browser, quick: Gateway, pages: list[UserPage]
) -> None:
    page = (await new_page(browser, quick, pages, phone=True)).page
    await login_ui(page, "martin@demo.test")
    staff_token = await quick.login("staff@demo.test")
    household = await channel_of(quick, staff_token, "Famille Martin")
    await open_channel(page, "Famille Martin")
    s = quick.services
    banner = page.locator(".maintenance")

    await maintenance.switch_on(s.pool, s.redis, s.keys, MESSAGE)
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text(MESSAGE)
    await expect(status(page)).not_to_have_text("En ligne")

    # A page opened meanwhile tells why rather than "the server does not answer".
    late = (await new_page(browser, quick, pages)).page
    await late.goto("/")
    await late.evaluate("token => localStorage.setItem('token', token)", staff_token)
    await late.reload()
    await expect(late.locator(".maintenance")).to_contain_text(MESSAGE)
    await expect(late.get_by_role("alert").filter(has_text="procreche est en maintenance")).to_be_visible()

    await maintenance.switch_off(s.pool, s.redis, s.keys)

    async def over() -> bool:
        return s.maintenance.current is None

    await wait_for(over)
    # Sent while the parent was away: shown once they are back, without a reload.
    async with Client.connect(quick.ws, staff_token) as staff:
        await staff.publish(household, "Pendant la maintenance, Léa a fait une belle sieste.")
    # The browser's "online" event brings the app back at once instead of after its backoff.
    await page.evaluate("dispatchEvent(new Event('online'))")
    await expect(status(page)).to_have_text("En ligne")
    await expect(banner).to_be_hidden()
    await expect(page.get_by_text("Pendant la maintenance, Léa a fait une belle sieste.")).to_be_visible()
