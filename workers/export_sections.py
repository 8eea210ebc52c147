"""The sections of an export (docs/export.md), each read from PostgreSQL on the caller's
connection: what a scope holds is workers/export_scopes.py's, these only read and shape.

Nothing secret is ever selected (no password hash, session or invitation token), and
every timestamp is written as the administration API writes it (ISO 8601).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from realtime import bodies
from realtime.admin import iso

log = logging.getLogger("procreche.exports")

Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
Json: TypeAlias = dict[str, Any]

# A structure's whole history is read in a few statements: far longer than the pool's
# default command timeout, still bounded.
QUERY_TIMEOUT = 300.0
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "video/mp4": "mp4"}


@dataclass(frozen=True, slots=True)
class MediaFile:
    media_id: str
    key: str
    arcname: str


async def fetch(conn: Conn, sql: str, *args: object) -> list[asyncpg.Record]:
    return await conn.fetch(sql, *args, timeout=QUERY_TIMEOUT)


async def structures(conn: Conn, ids: Collection[int]) -> list[Json]:
    rows = await fetch(
        conn,
        "SELECT id, name, guardians_may_post, retention_months, created_at FROM structures"
        " WHERE id = ANY($1::bigint[]) ORDER BY id",
        list(ids),
    )
    return [dict(r) | {"created_at": iso(r["created_at"])} for r in rows]


async def groups(conn: Conn, ids: Collection[int]) -> list[Json]:
    rows = await fetch(
        conn, "SELECT id, structure_id, name FROM groups WHERE id = ANY($1::bigint[]) ORDER BY id", list(ids)
    )
    return [dict(r) for r in rows]


async def accounts(conn: Conn, ids: Collection[int], structure_id: int | None) -> list[Json]:
    """Accounts without any secret (no password hash, no session, no invitation), with
    their roles (in `structure_id` only, when given) and terms acceptances."""
    users = await fetch(
        conn,
        "SELECT id, email, display_name, created_at, disabled_at IS NOT NULL AS disabled FROM users"
        " WHERE id = ANY($1::bigint[]) ORDER BY id",
        list(ids),
    )
    roles = await fetch(
        conn,
        "SELECT m.user_id, m.structure_id, s.name, m.role, m.created_at FROM memberships m"
        " JOIN structures s ON s.id = m.structure_id"
        " WHERE m.user_id = ANY($1::bigint[]) AND ($2::bigint IS NULL OR m.structure_id = $2)"
        " ORDER BY m.user_id, m.structure_id, m.role",
        list(ids),
        structure_id,
    )
    terms = await fetch(
        conn,
        "SELECT user_id, version, accepted_at FROM terms_acceptances WHERE user_id = ANY($1::bigint[])"
        " ORDER BY user_id, version",
        list(ids),
    )
    return [
        {
            "id": u["id"],
            "email": u["email"],
            "name": u["display_name"],
            "created_at": iso(u["created_at"]),
            "disabled": u["disabled"],
            "memberships": [
                {
                    "structure_id": r["structure_id"],
                    "structure": r["name"],
                    "role": r["role"],
                    "since": iso(r["created_at"]),
                }
                for r in roles
                if r["user_id"] == u["id"]
            ],
            "terms_acceptances": [
                {"version": t["version"], "accepted_at": iso(t["accepted_at"])}
                for t in terms
                if t["user_id"] == u["id"]
            ],
        }
        for u in users
    ]


async def households(conn: Conn, ids: Collection[int]) -> list[Json]:
    rows = await fetch(
        conn,
        "SELECT f.id, f.structure_id, f.name, f.created_at,"
        " ARRAY(SELECT u.id FROM family_members m JOIN users u ON u.id = m.user_id"
        "       WHERE m.family_id = f.id ORDER BY u.id) AS member_ids,"
        " ARRAY(SELECT u.display_name FROM family_members m JOIN users u ON u.id = m.user_id"
        "       WHERE m.family_id = f.id ORDER BY u.id) AS member_names,"
        " ARRAY(SELECT child_id FROM family_children c WHERE c.family_id = f.id ORDER BY 1) AS children"
        " FROM families f WHERE f.id = ANY($1::bigint[]) ORDER BY f.id",
        list(ids),
    )
    return [
        {
            "id": r["id"],
            "structure_id": r["structure_id"],
            "name": r["name"],
            "created_at": iso(r["created_at"]),
            "members": [{"id": i, "name": n} for i, n in zip(r["member_ids"], r["member_names"], strict=True)],
            "children": list(r["children"]),
        }
        for r in rows
    ]


async def children(conn: Conn, ids: Collection[int]) -> list[Json]:
    rows = await fetch(
        conn,
        "SELECT id, structure_id, group_id, first_name, last_name, birth_date, enrolled_on, left_on, created_at"
        " FROM children WHERE id = ANY($1::bigint[]) ORDER BY id",
        list(ids),
    )
    dates = ("birth_date", "enrolled_on", "left_on", "created_at")
    return [dict(r) | {d: iso(r[d]) for d in dates} for r in rows]


async def guardianships(conn: Conn, child_ids: Collection[int], user_ids: Collection[int] | None) -> list[Json]:
    """The guardianships of these children (held by `user_ids` only, when given)."""
    rows = await fetch(
        conn,
        "SELECT g.child_id, g.user_id, u.display_name, g.parental_authority, g.consultation, g.may_post, g.created_at"
        " FROM guardianships g JOIN users u ON u.id = g.user_id"
        " WHERE g.child_id = ANY($1::bigint[]) AND ($2::bigint[] IS NULL OR g.user_id = ANY($2::bigint[]))"
        " ORDER BY g.child_id, g.user_id",
        list(child_ids),
        None if user_ids is None else list(user_ids),
    )
    return [
        {
            "child_id": r["child_id"],
            "guardian": {"id": r["user_id"], "name": r["display_name"]},
            "parental_authority": r["parental_authority"],
            "consultation": r["consultation"],
            "may_post": r["may_post"],
            "since": iso(r["created_at"]),
        }
        for r in rows
    ]


async def consents(conn: Conn, child_ids: Collection[int], user_ids: Collection[int] | None) -> list[Json]:
    """Every consent given for these children (by `user_ids` only, when given), revoked
    ones included: the history."""
    rows = await fetch(
        conn,
        "SELECT k.id, k.child_id, k.guardian_id, u.display_name, k.kind, k.granted_at, k.revoked_at,"
        " k.terms_version, k.declaration FROM consents k JOIN users u ON u.id = k.guardian_id"
        " WHERE k.child_id = ANY($1::bigint[]) AND ($2::bigint[] IS NULL OR k.guardian_id = ANY($2::bigint[]))"
        " ORDER BY k.child_id, k.granted_at, k.id",
        list(child_ids),
        None if user_ids is None else list(user_ids),
    )
    return [
        {
            "id": r["id"],
            "child_id": r["child_id"],
            "guardian": {"id": r["guardian_id"], "name": r["display_name"]},
            "kind": r["kind"],
            "granted_at": iso(r["granted_at"]),
            "revoked_at": iso(r["revoked_at"]),
            "terms_version": r["terms_version"],
            "declaration": r["declaration"],
        }
        for r in rows
    ]


MESSAGES_SQL = """
SELECT m.id::text AS id, m.channel, m.seq, m.author_id, m.author_name, m.kind, m.body, m.created_at,
       m.withdrawn_at IS NOT NULL AS withdrawn,
       ARRAY(SELECT child_id FROM message_children mc WHERE mc.message_id = m.id ORDER BY 1) AS children
FROM messages m WHERE {where} ORDER BY m.channel, m.seq
"""


async def messages(conn: Conn, where: str, *args: object) -> list[Json]:
    rows = await fetch(conn, MESSAGES_SQL.format(where=where), *args)
    return [
        {
            "id": r["id"],
            "channel": r["channel"],
            "seq": r["seq"],
            "author": {"id": r["author_id"], "name": r["author_name"]},
            "kind": r["kind"],
            "body": r["body"],
            "created_at": iso(r["created_at"]),
            "withdrawn": r["withdrawn"],
            "children": list(r["children"]),
        }
        for r in rows
    ]


def concerns(message: Json) -> tuple[int, ...]:
    """Every child a message is about: its tags and a daily report's child (as
    realtime.messages.Message.concerns)."""
    return tuple(message["children"]) + bodies.concerns(message["body"])


async def media_of(conn: Conn, shown: Sequence[Json]) -> list[tuple[Json, MediaFile | None, asyncpg.Record]]:
    """The media the messages `shown` show: metadata, the original's file, and the row."""
    rows = await fetch(
        conn,
        "SELECT id::text AS id, structure_id, uploader_id, kind, message_id::text AS message_id, children,"
        " renditions, created_at FROM media WHERE message_id = ANY($1::uuid[]) AND state = 'ready'"
        " ORDER BY created_at, id",
        [m["id"] for m in shown],
    )
    found = []
    for r in rows:
        original = r["renditions"].get("original") or {}
        file = None
        if original.get("key"):
            extension = EXTENSIONS.get(original.get("type", ""), "bin")
            file = MediaFile(r["id"], original["key"], f"media/{r['id']}/original.{extension}")
        described = {
            "id": r["id"],
            "message_id": r["message_id"],
            "type": r["kind"],
            "content_type": original.get("type"),
            "width": original.get("width"),
            "height": original.get("height"),
            "bytes": original.get("bytes"),
            "uploader_id": r["uploader_id"],
            "children": list(r["children"]),
            "created_at": iso(r["created_at"]),
            "file": None if file is None else file.arcname,
        }
        found.append((described, file, r))
    return found


async def read_positions(conn: Conn, where: str, *args: object) -> list[Json]:
    rows = await fetch(
        conn, f"SELECT channel, user_id, seq, read_at FROM receipts WHERE {where} ORDER BY channel, user_id", *args
    )
    return [dict(r) | {"read_at": iso(r["read_at"])} for r in rows]


async def reports(conn: Conn, where: str, *args: object) -> list[Json] | None:
    """Reports, read on the columns every version of the table has; None (the section is
    left out) if the table cannot be read so."""
    try:
        async with conn.transaction():  # a savepoint: a failure here spares the snapshot
            rows = await fetch(
                conn,
                "SELECT reporter_id, message_id::text AS message_id, reason, state, created_at FROM reports"
                f" WHERE {where} ORDER BY created_at, message_id",
                *args,
            )
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError) as exc:
        log.warning("export: reports left out: %s", exc)
        return None
    return [dict(r) | {"created_at": iso(r["created_at"])} for r in rows]
