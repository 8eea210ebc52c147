"""Announcements and daily reports over the wire."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from realtime.client import Client, ReplyError
from tests.conftest import Gateway

pytestmark = pytest.mark.usefixtures("demo_families")


async def ids(gateway: Gateway, *first_names: str) -> list[int]:
    return [
        await gateway.services.pool.fetchval("SELECT id FROM children WHERE first_name = $1", name)
        for name in first_names
    ]


async def send(client: Client, channel: str, body: dict[str, Any]) -> dict[str, Any]:
    return await client.request("publish", channel=channel, msg_id=str(uuid.uuid4()), body=body)


@pytest.mark.rule("P8")
async def test_an_announcement_reaches_the_groups_guardians(gateway: Gateway) -> None:
    [emma] = await ids(gateway, "Emma")
    grands = f"group:{await gateway.services.pool.fetchval('SELECT group_id FROM children WHERE id = $1', emma)}"
    body = {"kind": "announcement", "title": "Sortie au parc", "text": "Jeudi, prévoir une casquette."}
    async with (
        Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff,
        Client.connect(gateway.ws, await gateway.login("bernard@demo.test")) as parent,
    ):
        await parent.subscribe(grands)
        sent = await send(staff, grands, body)
        push = await parent.next_push()
        assert (push["id"], push["body"]) == (sent["id"], body)
        with pytest.raises(ReplyError) as refused:
            await send(staff, f"child:{emma}", body)
        assert refused.value.code == "kind_not_allowed"


@pytest.mark.rule("P9")
async def test_a_daily_report_needs_no_publication_consent_but_respects_consultation(
    gateway: Gateway, demo_families: dict[str, int]
) -> None:
    hugo, emma = await ids(gateway, "Hugo", "Emma")
    report = {
        "kind": "daily_report",
        "child": hugo,
        "date": "2026-11-25",
        "meals": [{"time": "11:30", "food": "Purée", "amount": "all"}],
        "mood": "happy",
    }
    async with (
        Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff,
        Client.connect(gateway.ws, await gateway.login("dupont.pere@demo.test")) as father,
    ):
        await father.subscribe(f"child:{hugo}")
        # The father has not consented to publication: a report to Hugo's own parents is fine.
        sent = await send(staff, f"child:{hugo}", report)
        push = await father.next_push()
        assert (push["id"], push["body"]["child"], push["body"]["mood"]) == (sent["id"], hugo, "happy")
        with pytest.raises(ReplyError) as elsewhere:
            await send(staff, f"family:{demo_families['Famille Martin']}", report)
        assert elsewhere.value.code == "kind_not_allowed"
        with pytest.raises(ReplyError) as not_staff:
            await send(father, f"family:{demo_families['Famille Dupont (père)']}", report)
        assert not_staff.value.code == "forbidden"
    # Bernard may not consult Emma: her reports on the household channel never reach him.
    await gateway.services.pool.execute("UPDATE guardianships SET consultation = false WHERE child_id = $1", emma)
    household = f"family:{demo_families['Famille Bernard']}"
    async with (
        Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff,
        Client.connect(gateway.ws, await gateway.login("bernard@demo.test")) as parent,
    ):
        await parent.subscribe(household)
        await send(staff, household, {"kind": "daily_report", "child": emma, "date": "2026-11-25"})
        general = await staff.publish(household, "Réunion des parents")
        assert (await parent.next_push())["id"] == general["id"]
        page = await parent.request("history", channel=household, before=10)
        assert [m["id"] for m in page["messages"]] == [general["id"]]
