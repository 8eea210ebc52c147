"""What an export holds, per scope: the sections of export.json and the media files to put
beside it (docs/export.md).

Who sees what is the policy's (realtime/permissions.py), asked here, never re-implemented:
a `me` export holds the channels `may_subscribe` allows the requester now, each message
kept only if `sees` it, each media file only if `may_view_media` serves it. The data is
read in one read-only REPEATABLE READ transaction, so that every section describes the
same instant.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from realtime.channels import Channel
from realtime.database import Pool
from realtime.directory import Directory
from realtime.exports import Export
from realtime.message_store import ABOUT_CHILD
from realtime.permissions import MediaView, Principal, may_subscribe, may_view_media, sees, structure_of
from workers.export_sections import (
    Conn,
    Json,
    MediaFile,
    accounts,
    children,
    concerns,
    consents,
    fetch,
    groups,
    guardianships,
    households,
    media_of,
    messages,
    read_positions,
    reports,
    structures,
)

SECTIONS = (
    "structures",
    "groups",
    "accounts",
    "households",
    "children",
    "guardianships",
    "consents",
    "messages",
    "media",
    "read_positions",
    "reports",
)


class Refused(Exception):
    """The requester may no longer export this (rights lost, account gone): not retried."""


@dataclass
class Bundle:
    """export.json's sections, and the files to fetch into the zip."""

    sections: dict[str, list[Json]] = field(default_factory=dict)
    files: list[MediaFile] = field(default_factory=list)


def _channels(kind: str, ids: Collection[int]) -> list[str]:
    return [f"{kind}:{i}" for i in sorted(ids)]


async def _media(conn: Conn, bundle: Bundle) -> None:
    found = await media_of(conn, bundle.sections["messages"])
    bundle.sections["media"] = [described for described, _, _ in found]
    bundle.files = [file for _, file, _ in found if file is not None]


async def _mine(pool: Pool, directory: Directory, p: Principal) -> Bundle:
    """What the user may see now, and what they wrote."""
    async with pool.acquire() as conn:
        group_ids = {
            r["group_id"]
            for r in await fetch(
                conn,
                "SELECT DISTINCT group_id FROM children WHERE id = ANY($1::bigint[]) AND group_id IS NOT NULL",
                list(p.guardianships),
            )
        }
    candidates = [
        *_channels("family", p.households),
        *_channels("child", p.guardianships),
        *_channels("group", group_ids),
        *_channels("structure", p.member_of),
    ]
    # The channel's structure, for each channel the policy lets the user read now.
    readable: dict[str, int | None] = {}
    for name in candidates:
        channel = Channel.parse(name)
        facts = await directory.channel_facts(channel)
        if may_subscribe(p, channel, facts).allowed:
            readable[name] = structure_of(facts)
    bundle = Bundle()
    s = bundle.sections
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        s["structures"] = await structures(conn, p.member_of)
        s["groups"] = await groups(conn, group_ids)
        s["accounts"] = await accounts(conn, [p.user_id], None)
        s["households"] = await households(conn, p.households)
        s["children"] = await children(conn, p.guardianships)
        s["guardianships"] = await guardianships(conn, p.guardianships, [p.user_id])
        s["consents"] = await consents(conn, p.guardianships, [p.user_id])
        seen = [
            m
            for m in await messages(conn, "m.channel = ANY($1::text[])", list(readable))
            if sees(p, readable[m["channel"]], concerns(m), m["withdrawn"])
        ]
        # What they wrote is theirs, wherever it was and whatever became of it.
        authored = await messages(conn, "m.author_id = $1", p.user_id)
        known = {m["id"] for m in seen}
        s["messages"] = sorted(
            [*seen, *(m for m in authored if m["id"] not in known)], key=lambda m: (m["channel"], m["seq"])
        )
        found = await media_of(conn, s["messages"])
        s["read_positions"] = await read_positions(conn, "user_id = $1", p.user_id)
        if (own := await reports(conn, "reporter_id = $1", p.user_id)) is not None:
            s["reports"] = own
    # Each file as GET /api/media/<id> would serve it to them now (consents read now).
    withdrawn = {m["id"]: m["withdrawn"] for m in s["messages"]}
    channel_of = {m["id"]: m["channel"] for m in s["messages"]}
    s["media"] = []
    for described, file, row in found:
        channel = Channel.parse(channel_of[row["message_id"]])
        decision = may_subscribe(p, channel, await directory.channel_facts(channel))
        tagged = tuple(await directory.consents(row["children"])) if row["children"] else ()
        view = MediaView(row["structure_id"], row["uploader_id"], True, withdrawn[row["message_id"]], tagged)
        if may_view_media(p, view, decision).allowed:
            s["media"].append(described)
            if file is not None:
                bundle.files.append(file)
    return bundle


async def _child(pool: Pool, export: Export) -> Bundle:
    child_id = export.subject
    assert child_id is not None
    bundle = Bundle()
    s = bundle.sections
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        s["children"] = await children(conn, [child_id])
        if not s["children"]:
            raise Refused(f"child {child_id} no longer exists")
        record = s["children"][0]
        s["structures"] = await structures(conn, [record["structure_id"]])
        s["groups"] = await groups(conn, [] if record["group_id"] is None else [record["group_id"]])
        s["guardianships"] = await guardianships(conn, [child_id], None)
        s["consents"] = await consents(conn, [child_id], None)
        s["messages"] = await messages(conn, ABOUT_CHILD, child_id)
        await _media(conn, bundle)
        s["read_positions"] = await read_positions(conn, "channel = $1", f"child:{child_id}")
        s["reports"] = []  # moderation data of the structure's, not the child's
    return bundle


async def _household(pool: Pool, export: Export) -> Bundle:
    assert export.subject is not None
    bundle = Bundle()
    s = bundle.sections
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        s["households"] = await households(conn, [export.subject])
        if not s["households"]:
            raise Refused(f"household {export.subject} no longer exists")
        family = s["households"][0]
        members = [m["id"] for m in family["members"]]
        s["structures"] = await structures(conn, [family["structure_id"]])
        s["accounts"] = await accounts(conn, members, family["structure_id"])
        s["children"] = await children(conn, family["children"])
        s["groups"] = await groups(conn, {c["group_id"] for c in s["children"] if c["group_id"] is not None})
        # The household's own: its members' guardianships and consents, not another
        # household's (a separated parent's).
        s["guardianships"] = await guardianships(conn, family["children"], members)
        s["consents"] = await consents(conn, family["children"], members)
        channel = f"family:{export.subject}"
        s["messages"] = await messages(conn, "m.channel = $1", channel)
        await _media(conn, bundle)
        s["read_positions"] = await read_positions(conn, "channel = $1", channel)
        s["reports"] = []  # moderation data of the structure's, not the household's
    return bundle


async def _structure(pool: Pool, export: Export) -> Bundle:
    structure_id = export.subject
    assert structure_id is not None
    bundle = Bundle()
    s = bundle.sections
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        s["structures"] = await structures(conn, [structure_id])
        if not s["structures"]:
            raise Refused(f"structure {structure_id} no longer exists")

        async def ids(sql: str) -> list[int]:
            return [r["id"] for r in await fetch(conn, sql, structure_id)]

        group_ids = await ids("SELECT id FROM groups WHERE structure_id = $1")
        family_ids = await ids("SELECT id FROM families WHERE structure_id = $1")
        child_ids = await ids("SELECT id FROM children WHERE structure_id = $1")
        member_ids = await ids("SELECT DISTINCT user_id AS id FROM memberships WHERE structure_id = $1")
        s["groups"] = await groups(conn, group_ids)
        s["accounts"] = await accounts(conn, member_ids, structure_id)
        s["households"] = await households(conn, family_ids)
        s["children"] = await children(conn, child_ids)
        s["guardianships"] = await guardianships(conn, child_ids, None)
        s["consents"] = await consents(conn, child_ids, None)
        channels = [
            f"structure:{structure_id}",
            *_channels("group", group_ids),
            *_channels("family", family_ids),
            *_channels("child", child_ids),
        ]
        s["messages"] = await messages(conn, "m.channel = ANY($1::text[])", channels)
        await _media(conn, bundle)
        s["read_positions"] = await read_positions(conn, "channel = ANY($1::text[])", channels)
        if (
            reported := await reports(conn, "message_id = ANY($1::uuid[])", [m["id"] for m in s["messages"]])
        ) is not None:
            s["reports"] = reported
    return bundle


async def gather(pool: Pool, directory: Directory, export: Export, principal: Principal) -> Bundle:
    """The export's data, for a requester the policy still allows (checked by the caller)."""
    if export.scope == "me":
        bundle = await _mine(pool, directory, principal)
    elif export.scope == "child":
        bundle = await _child(pool, export)
    elif export.scope == "household":
        bundle = await _household(pool, export)
    else:
        bundle = await _structure(pool, export)
    for section in SECTIONS:
        # Reports stay out when they could not be read (`reports`): absent, not empty.
        if section != "reports":
            bundle.sections.setdefault(section, [])
    return bundle
