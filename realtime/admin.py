"""Administration of one structure: settings, staff, groups, children, households and
guardianships, plus the consent state and audit log that staff and admins read.

Every write is one transaction that also appends its audit_log row, so a change is never
committed without its record; the gateways are told what changed (`announce`) only after the
commit, so that they never reload a fact that is about to be rolled back. Every query is
scoped by the structure: an id of another structure is `not_found`, exactly like an id that
does not exist.

Authorisation is not decided here: the caller (gateway/admin_api.py) asks the policy first.
Audit details name what changed but carry as little personal data as they can (field names
rather than children's or users' values), because the log is append-only and outlives
the erasure of the rows it describes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from datetime import date, datetime
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from redis.asyncio import Redis

from realtime import audit, invitations
from realtime.database import Pool
from realtime.directory import CURRENT_CHILD, Directory
from realtime.errors import BadRequest, Conflict, NotFound
from realtime.invalidation import announce
from realtime.keys import Keys
from realtime.permissions import ChildConsent

Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
Json: TypeAlias = dict[str, Any]

STAFF_ROLES = frozenset({"staff", "admin"})
STRUCTURE_FIELDS = ("name", "guardians_may_post", "retention_months")
CHILD_FIELDS = ("first_name", "last_name", "group_id", "birth_date", "enrolled_on", "left_on")
GUARDIANSHIP_FLAGS = ("parental_authority", "consultation", "may_post")
SCOPED = {"groups": "group", "children": "child", "families": "household"}


def iso(value: date | datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _child_json(row: Mapping[str, Any] | asyncpg.Record) -> Json:
    return {
        "id": row["id"],
        "first_name": row["first_name"],
        "last_name": row["last_name"],
        "group_id": row["group_id"],
        "birth_date": iso(row["birth_date"]),
        "enrolled_on": iso(row["enrolled_on"]),
        "left_on": iso(row["left_on"]),
    }


def _consent_summary(state: ChildConsent, granted: Mapping[int, datetime]) -> Json:
    return {
        "child": {"id": state.child_id, "name": state.name},
        "complete": state.complete,
        "holders": [
            {
                "id": h.user_id,
                "name": h.name,
                "consented": h.user_id in state.consented,
                "granted_at": iso(granted.get(h.user_id)) if h.user_id in state.consented else None,
            }
            for h in state.holders
        ],
    }


STAFF_SQL = """
SELECT u.id, u.email, u.display_name AS name, u.password_hash IS NOT NULL AS active,
       array_agg(m.role ORDER BY m.role) AS roles,
       ARRAY(SELECT sg.group_id FROM staff_groups sg JOIN groups g ON g.id = sg.group_id
             WHERE sg.user_id = u.id AND g.structure_id = $1 ORDER BY 1) AS groups
FROM memberships m JOIN users u ON u.id = m.user_id
WHERE m.structure_id = $1 AND m.role IN ('staff', 'admin') AND ($2::bigint IS NULL OR u.id = $2)
GROUP BY u.id ORDER BY u.display_name, u.id
"""

GROUPS_SQL = """
SELECT g.id, g.name,
       ARRAY(SELECT user_id FROM staff_groups sg WHERE sg.group_id = g.id ORDER BY 1) AS staff,
       ARRAY(SELECT c.id FROM children c WHERE c.group_id = g.id ORDER BY 1) AS children
FROM groups g WHERE g.structure_id = $1 AND ($2::bigint IS NULL OR g.id = $2) ORDER BY g.name, g.id
"""

FAMILIES_SQL = """
SELECT f.id, f.name,
       ARRAY(SELECT fc.child_id FROM family_children fc WHERE fc.family_id = f.id ORDER BY 1) AS children,
       COALESCE((SELECT jsonb_agg(jsonb_build_object('id', u.id, 'name', u.display_name, 'email', u.email,
                                                     'active', u.password_hash IS NOT NULL) ORDER BY u.id)
                 FROM family_members fm JOIN users u ON u.id = fm.user_id WHERE fm.family_id = f.id),
                '[]'::jsonb) AS members
FROM families f WHERE f.structure_id = $1 AND ($2::bigint IS NULL OR f.id = $2) ORDER BY f.name, f.id
"""

CHILD_SQL = """
SELECT id, first_name, last_name, group_id, birth_date, enrolled_on, left_on
FROM children WHERE structure_id = $1 AND ($2::bigint IS NULL OR id = $2)
ORDER BY last_name, first_name, id
"""

# "Current" children: not left yet, or leaving in the future.
CURRENT_CHILDREN_SQL = f"""
SELECT id, group_id, ARRAY(SELECT family_id FROM family_children f WHERE f.child_id = c.id ORDER BY 1) AS families
FROM children c WHERE structure_id = $1 AND {CURRENT_CHILD}
ORDER BY last_name, first_name, id
"""

ACTIVE_CONSENTS_SQL = """
SELECT child_id, guardian_id, granted_at FROM consents
WHERE child_id = ANY($1::bigint[]) AND kind = 'publication' AND revoked_at IS NULL
"""

AUDIT_SQL = """
SELECT a.id, a.at, a.actor_id, u.display_name AS actor_name, a.action, a.subject_type, a.subject_id, a.details
FROM audit_log a LEFT JOIN users u ON u.id = a.actor_id
WHERE a.structure_id = $1 AND ($2::bigint IS NULL OR a.id < $2) AND ($3::text IS NULL OR starts_with(a.action, $3))
ORDER BY a.id DESC LIMIT $4
"""


class StructureAdmin:
    """The operations of one actor on one structure. Cheap: build one per request."""

    def __init__(
        self,
        pool: Pool,
        redis: Redis,
        keys: Keys,
        directory: Directory,
        *,
        actor_id: int,
        structure_id: int,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.keys = keys
        self.directory = directory
        self.actor_id = actor_id
        self.structure_id = structure_id

    # -- plumbing -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Conn]:
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                yield conn
            except asyncpg.UniqueViolationError as exc:
                # Only names are unique beyond the primary keys, which every INSERT here
                # guards with ON CONFLICT: a violation is a name already in use.
                raise Conflict("this name is already in use", code="name_taken") from exc

    async def _audit(
        self,
        conn: Conn,
        action: str,
        subject_type: str,
        subject_id: int,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        await audit.record(
            conn,
            actor_id=self.actor_id,
            structure_id=self.structure_id,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            details=details,
        )

    async def _announce(
        self,
        *,
        users: Iterable[int] = (),
        structures: Iterable[int] = (),
        children: Iterable[int] = (),
        families: Iterable[int] = (),
        groups: Iterable[int] = (),
    ) -> None:
        await announce(
            self.redis,
            self.keys,
            users=users,
            structures=structures,
            children=children,
            families=families,
            groups=groups,
        )

    async def _lock_structure(self, conn: Conn) -> asyncpg.Record:
        row = await conn.fetchrow(
            "SELECT id, name, guardians_may_post, retention_months FROM structures WHERE id = $1 FOR UPDATE",
            self.structure_id,
        )
        if row is None:
            raise NotFound("no such structure")
        return row

    async def _scoped(self, conn: Conn, table: str, entity_id: int, *, lock: bool = False) -> asyncpg.Record:
        """The row of this structure's group, child or family, or `not_found`."""
        # `table` is one of the SCOPED literals, never client input.
        noun = SCOPED[table]
        row = await conn.fetchrow(
            f"SELECT * FROM {table} WHERE id = $1 AND structure_id = $2{' FOR UPDATE' if lock else ''}",
            entity_id,
            self.structure_id,
        )
        if row is None:
            raise NotFound(f"no such {noun} in this structure")
        return row

    async def _roles(self, conn: Conn, user_id: int) -> set[str]:
        rows = await conn.fetch(
            "SELECT role FROM memberships WHERE structure_id = $1 AND user_id = $2", self.structure_id, user_id
        )
        return {r["role"] for r in rows}

    async def _user_for(self, conn: Conn, email: str, name: str) -> tuple[int, bool]:
        """The account with this email, created without a password if it is new (its owner
        sets one through an invitation: an admin never chooses it). An existing account
        keeps its name: it may be another structure's user too."""
        created = await conn.fetchval(
            "INSERT INTO users (email, display_name, password_hash, must_reset_password)"
            " VALUES ($1, $2, NULL, true) ON CONFLICT (email) DO NOTHING RETURNING id",
            email,
            name,
        )
        if created is not None:
            await self._audit(conn, "user.create", "user", created)
            return int(created), True
        existing = await conn.fetchval("SELECT id FROM users WHERE email = $1", email)
        assert existing is not None
        return int(existing), False

    # -- structure ------------------------------------------------------------------------

    async def structure(self) -> Json:
        row = await self.pool.fetchrow(
            "SELECT id, name, guardians_may_post, retention_months FROM structures WHERE id = $1",
            self.structure_id,
        )
        if row is None:
            raise NotFound("no such structure")
        return dict(row)

    async def update_structure(self, changes: Mapping[str, Any]) -> Json:
        async with self._transaction() as conn:
            current = dict(await self._lock_structure(conn))
            diff = {k: {"from": current[k], "to": v} for k, v in changes.items() if current[k] != v}
            updated = {**current, **changes}
            if diff:
                await conn.execute(
                    "UPDATE structures SET name = $2, guardians_may_post = $3, retention_months = $4 WHERE id = $1",
                    self.structure_id,
                    *(updated[f] for f in STRUCTURE_FIELDS),
                )
                await self._audit(conn, "structure.update", "structure", self.structure_id, {"changes": diff})
        if diff:
            await self._announce(structures=[self.structure_id])
        return updated

    # -- staff ----------------------------------------------------------------------------

    async def staff(self) -> list[Json]:
        return [dict(r) for r in await self.pool.fetch(STAFF_SQL, self.structure_id, None)]

    async def add_staff(self, email: str, name: str, role: str) -> tuple[Json, bool]:
        """Adds the role (creating the account if the email is new); returns the staff
        member and whether anything changed."""
        assert role in STAFF_ROLES
        async with self._transaction() as conn:
            user_id, new_user = await self._user_for(conn, email, name)
            added = await conn.fetchval(
                "INSERT INTO memberships (structure_id, user_id, role) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING user_id",
                self.structure_id,
                user_id,
                role,
            )
            if added is not None:
                await self._audit(conn, "staff.add", "user", user_id, {"role": role, "new_user": new_user})
            member = await conn.fetchrow(STAFF_SQL, self.structure_id, user_id)
        if added is not None:
            await self._announce(users=[user_id])
        assert member is not None
        return dict(member), added is not None

    async def invite(self, user_id: int) -> Json:
        """A link for a member of the structure whose account has no password yet."""
        async with self._transaction() as conn:
            return await invitations.create(
                conn, actor_id=self.actor_id, structure_id=self.structure_id, user_id=user_id
            )

    async def remove_staff(self, user_id: int, role: str) -> None:
        assert role in STAFF_ROLES
        async with self._transaction() as conn:
            # Serialises membership changes of the structure, so that two admins removing
            # each other at once cannot both pass the last-admin check.
            await self._lock_structure(conn)
            roles = await self._roles(conn, user_id)
            if role not in roles:
                raise NotFound(f"this user is not {role} of this structure")
            if role == "admin":
                admins = await conn.fetchval(
                    "SELECT count(*) FROM memberships WHERE structure_id = $1 AND role = 'admin'", self.structure_id
                )
                if admins <= 1:
                    raise Conflict("a structure keeps at least one admin", code="last_admin")
            await conn.execute(
                "DELETE FROM memberships WHERE structure_id = $1 AND user_id = $2 AND role = $3",
                self.structure_id,
                user_id,
                role,
            )
            groups: list[int] = []
            if not (roles - {role}) & STAFF_ROLES:
                # No longer staff here: they leave the structure's groups too.
                rows = await conn.fetch(
                    "DELETE FROM staff_groups sg USING groups g WHERE g.id = sg.group_id"
                    " AND g.structure_id = $1 AND sg.user_id = $2 RETURNING sg.group_id",
                    self.structure_id,
                    user_id,
                )
                groups = [r["group_id"] for r in rows]
            await self._audit(conn, "staff.remove", "user", user_id, {"role": role, "groups_left": groups})
        await self._announce(users=[user_id], groups=groups)

    # -- groups ---------------------------------------------------------------------------

    async def groups(self) -> list[Json]:
        return [dict(r) for r in await self.pool.fetch(GROUPS_SQL, self.structure_id, None)]

    async def _group_json(self, conn: Conn, group_id: int) -> Json:
        row = await conn.fetchrow(GROUPS_SQL, self.structure_id, group_id)
        assert row is not None
        return dict(row)

    async def create_group(self, name: str) -> Json:
        async with self._transaction() as conn:
            group_id = await conn.fetchval(
                "INSERT INTO groups (structure_id, name) VALUES ($1, $2) RETURNING id", self.structure_id, name
            )
            await self._audit(conn, "group.create", "group", group_id, {"name": name})
            group = await self._group_json(conn, group_id)
        await self._announce(groups=[group_id])
        return group

    async def rename_group(self, group_id: int, name: str) -> Json:
        async with self._transaction() as conn:
            old = await self._scoped(conn, "groups", group_id, lock=True)
            if old["name"] != name:
                await conn.execute("UPDATE groups SET name = $2 WHERE id = $1", group_id, name)
                await self._audit(conn, "group.update", "group", group_id, {"from": old["name"], "to": name})
            group = await self._group_json(conn, group_id)
        if old["name"] != name:
            await self._announce(groups=[group_id])
        return group

    async def delete_group(self, group_id: int) -> None:
        async with self._transaction() as conn:
            old = await self._scoped(conn, "groups", group_id, lock=True)
            children = [r["id"] for r in await conn.fetch("SELECT id FROM children WHERE group_id = $1", group_id)]
            staff = [
                r["user_id"] for r in await conn.fetch("SELECT user_id FROM staff_groups WHERE group_id = $1", group_id)
            ]
            # Children stay enrolled, without a group (ON DELETE SET NULL).
            await conn.execute("DELETE FROM groups WHERE id = $1", group_id)
            await self._audit(conn, "group.delete", "group", group_id, {"name": old["name"], "children": children})
        await self._announce(groups=[group_id], children=children, users=staff)

    async def set_group_staff(self, group_id: int, user_ids: Collection[int]) -> Json:
        async with self._transaction() as conn:
            # Shares the lock remove_staff takes: nobody stops being staff between the
            # check below and the insert.
            await conn.execute("SELECT 1 FROM structures WHERE id = $1 FOR SHARE", self.structure_id)
            await self._scoped(conn, "groups", group_id, lock=True)
            wanted = set(user_ids)
            for user_id in sorted(wanted):
                roles = await self._roles(conn, user_id)
                if not roles:
                    raise NotFound(f"user {user_id} is not a member of this structure")
                if not roles & STAFF_ROLES:
                    raise BadRequest(f"user {user_id} is not staff of this structure", code="not_staff")
            rows = await conn.fetch("SELECT user_id FROM staff_groups WHERE group_id = $1", group_id)
            current = {r["user_id"] for r in rows}
            added, removed = sorted(wanted - current), sorted(current - wanted)
            if removed:
                await conn.execute(
                    "DELETE FROM staff_groups WHERE group_id = $1 AND user_id = ANY($2::bigint[])", group_id, removed
                )
            if added:
                await conn.executemany(
                    "INSERT INTO staff_groups (group_id, user_id) VALUES ($1, $2)", [(group_id, u) for u in added]
                )
            if added or removed:
                await self._audit(conn, "group.staff.set", "group", group_id, {"added": added, "removed": removed})
            group = await self._group_json(conn, group_id)
        if added or removed:
            await self._announce(groups=[group_id], users=[*added, *removed])
        return group

    # -- children -------------------------------------------------------------------------

    async def children(self) -> list[Json]:
        return [_child_json(r) for r in await self.pool.fetch(CHILD_SQL, self.structure_id, None)]

    async def child(self, child_id: int) -> Json:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(CHILD_SQL, self.structure_id, child_id)
            if row is None:
                raise NotFound("no such child in this structure")
            families = await conn.fetch(
                "SELECT f.id, f.name FROM family_children fc JOIN families f ON f.id = fc.family_id"
                " WHERE fc.child_id = $1 ORDER BY f.id",
                child_id,
            )
            guardians = await conn.fetch(
                "SELECT u.id, u.display_name AS name, g.parental_authority, g.consultation, g.may_post"
                " FROM guardianships g JOIN users u ON u.id = g.user_id WHERE g.child_id = $1 ORDER BY u.id",
                child_id,
            )
        return {**_child_json(row), "families": [dict(r) for r in families], "guardians": [dict(r) for r in guardians]}

    async def _check_child(self, conn: Conn, fields: Mapping[str, Any]) -> None:
        if fields["group_id"] is not None:
            await self._scoped(conn, "groups", fields["group_id"])
        if fields["left_on"] is not None and fields["left_on"] < fields["enrolled_on"]:
            raise BadRequest("left_on must not be before enrolled_on", code="bad_request")

    async def create_child(self, fields: Mapping[str, Any]) -> Json:
        """`fields`: first_name, last_name, enrolled_on, and optionally group_id, birth_date, left_on."""
        values = {"group_id": None, "birth_date": None, "left_on": None, **fields}
        async with self._transaction() as conn:
            await self._check_child(conn, values)
            row = await conn.fetchrow(
                "INSERT INTO children (structure_id, first_name, last_name, group_id, birth_date, enrolled_on, left_on)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
                self.structure_id,
                *(values[f] for f in CHILD_FIELDS),
            )
            assert row is not None
            await self._audit(conn, "child.create", "child", row["id"], {"group_id": values["group_id"]})
        await self._announce(children=[row["id"]], groups=[g for g in [values["group_id"]] if g is not None])
        return _child_json(row)

    async def update_child(self, child_id: int, changes: Mapping[str, Any]) -> Json:
        async with self._transaction() as conn:
            old = dict(await self._scoped(conn, "children", child_id, lock=True))
            values = {**old, **changes}
            await self._check_child(conn, values)
            changed = sorted(f for f in CHILD_FIELDS if values[f] != old[f])
            if changed:
                await conn.execute(
                    "UPDATE children SET first_name = $2, last_name = $3, group_id = $4, birth_date = $5,"
                    " enrolled_on = $6, left_on = $7 WHERE id = $1",
                    child_id,
                    *(values[f] for f in CHILD_FIELDS),
                )
                # Field names, not values: a child's data must not outlive its erasure here.
                details: Json = {"fields": changed}
                if "group_id" in changed:
                    details["group"] = {"from": old["group_id"], "to": values["group_id"]}
                await self._audit(conn, "child.update", "child", child_id, details)
        if changed:
            groups = {old["group_id"], values["group_id"]} - {None}
            await self._announce(children=[child_id], groups=groups)
        return _child_json(values)

    # -- households -----------------------------------------------------------------------

    async def families(self) -> list[Json]:
        return [dict(r) for r in await self.pool.fetch(FAMILIES_SQL, self.structure_id, None)]

    async def _family_json(self, conn: Conn, family_id: int) -> Json:
        row = await conn.fetchrow(FAMILIES_SQL, self.structure_id, family_id)
        assert row is not None
        return dict(row)

    async def create_family(self, name: str) -> Json:
        async with self._transaction() as conn:
            family_id = await conn.fetchval(
                "INSERT INTO families (structure_id, name) VALUES ($1, $2) RETURNING id", self.structure_id, name
            )
            await self._audit(conn, "family.create", "family", family_id, {"name": name})
            family = await self._family_json(conn, family_id)
        await self._announce(families=[family_id])
        return family

    async def rename_family(self, family_id: int, name: str) -> Json:
        async with self._transaction() as conn:
            old = await self._scoped(conn, "families", family_id, lock=True)
            if old["name"] != name:
                await conn.execute("UPDATE families SET name = $2 WHERE id = $1", family_id, name)
                await self._audit(conn, "family.update", "family", family_id, {"from": old["name"], "to": name})
            family = await self._family_json(conn, family_id)
        if old["name"] != name:
            await self._announce(families=[family_id])
        return family

    async def delete_family(self, family_id: int) -> None:
        async with self._transaction() as conn:
            old = await self._scoped(conn, "families", family_id, lock=True)
            members = [
                r["user_id"]
                for r in await conn.fetch("SELECT user_id FROM family_members WHERE family_id = $1", family_id)
            ]
            await conn.execute("DELETE FROM families WHERE id = $1", family_id)
            await self._audit(conn, "family.delete", "family", family_id, {"name": old["name"], "members": members})
        # The members' households changed: their principals are stale.
        await self._announce(families=[family_id], users=members)

    async def add_family_member(self, family_id: int, email: str, name: str) -> tuple[Json, bool]:
        """Adds a guardian to the household (creating the account if the email is new, and
        the guardian role in the structure if missing); returns the member and whether
        anything changed."""
        async with self._transaction() as conn:
            await self._scoped(conn, "families", family_id, lock=True)
            user_id, new_user = await self._user_for(conn, email, name)
            await conn.execute(
                "INSERT INTO memberships (structure_id, user_id, role) VALUES ($1, $2, 'guardian')"
                " ON CONFLICT DO NOTHING",
                self.structure_id,
                user_id,
            )
            added = await conn.fetchval(
                "INSERT INTO family_members (family_id, user_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING user_id",
                family_id,
                user_id,
            )
            if added is not None:
                await self._audit(
                    conn, "family.member.add", "family", family_id, {"user_id": user_id, "new_user": new_user}
                )
            member = await conn.fetchrow("SELECT id, display_name AS name, email FROM users WHERE id = $1", user_id)
        if added is not None:
            await self._announce(users=[user_id], families=[family_id])
        assert member is not None
        return dict(member), added is not None

    async def remove_family_member(self, family_id: int, user_id: int) -> None:
        # The guardian role in the structure stays: guardianships, not households, decide
        # which children's content they receive, and they may belong to another household.
        async with self._transaction() as conn:
            await self._scoped(conn, "families", family_id, lock=True)
            removed = await conn.fetchval(
                "DELETE FROM family_members WHERE family_id = $1 AND user_id = $2 RETURNING user_id", family_id, user_id
            )
            if removed is None:
                raise NotFound("this user is not a member of this household")
            await self._audit(conn, "family.member.remove", "family", family_id, {"user_id": user_id})
        await self._announce(users=[user_id], families=[family_id])

    async def add_family_child(self, family_id: int, child_id: int) -> bool:
        async with self._transaction() as conn:
            await self._scoped(conn, "families", family_id, lock=True)
            await self._scoped(conn, "children", child_id)
            added = await conn.fetchval(
                "INSERT INTO family_children (family_id, child_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING child_id",
                family_id,
                child_id,
            )
            if added is not None:
                await self._audit(conn, "family.child.add", "family", family_id, {"child_id": child_id})
        if added is not None:
            await self._announce(families=[family_id], children=[child_id])
        return added is not None

    async def remove_family_child(self, family_id: int, child_id: int) -> None:
        async with self._transaction() as conn:
            await self._scoped(conn, "families", family_id, lock=True)
            await self._scoped(conn, "children", child_id)
            removed = await conn.fetchval(
                "DELETE FROM family_children WHERE family_id = $1 AND child_id = $2 RETURNING child_id",
                family_id,
                child_id,
            )
            if removed is None:
                raise NotFound("this child is not part of this household")
            await self._audit(conn, "family.child.remove", "family", family_id, {"child_id": child_id})
        await self._announce(families=[family_id], children=[child_id])

    # -- guardianships --------------------------------------------------------------------

    async def set_guardianship(self, child_id: int, user_id: int, flags: Mapping[str, bool]) -> tuple[Json, bool]:
        """Creates or replaces a guardianship; returns it and whether it was created."""
        async with self._transaction() as conn:
            await self._scoped(conn, "children", child_id, lock=True)
            roles = await self._roles(conn, user_id)
            if not roles:
                raise NotFound("no such user in this structure")
            if "guardian" not in roles:
                raise BadRequest("this user is not a guardian in this structure", code="not_guardian")
            old = await conn.fetchrow(
                "SELECT parental_authority, consultation, may_post FROM guardianships"
                " WHERE child_id = $1 AND user_id = $2",
                child_id,
                user_id,
            )
            values = [flags[f] for f in GUARDIANSHIP_FLAGS]
            before = None if old is None else dict(old)
            if before != dict(flags):
                await conn.execute(
                    "INSERT INTO guardianships (child_id, user_id, parental_authority, consultation, may_post)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (child_id, user_id) DO UPDATE SET"
                    " parental_authority = $3, consultation = $4, may_post = $5",
                    child_id,
                    user_id,
                    *values,
                )
                await self._audit(
                    conn, "guardianship.set", "child", child_id, {"user_id": user_id, "from": before, "to": dict(flags)}
                )
        if before != dict(flags):
            await self._announce(users=[user_id], children=[child_id])
        return {"child_id": child_id, "user_id": user_id, **dict(flags)}, old is None

    async def remove_guardianship(self, child_id: int, user_id: int) -> None:
        async with self._transaction() as conn:
            await self._scoped(conn, "children", child_id, lock=True)
            old = await conn.fetchrow(
                "DELETE FROM guardianships WHERE child_id = $1 AND user_id = $2"
                " RETURNING parental_authority, consultation, may_post",
                child_id,
                user_id,
            )
            if old is None:
                raise NotFound("this user is not a guardian of this child")
            await self._audit(conn, "guardianship.remove", "child", child_id, {"user_id": user_id, "from": dict(old)})
        await self._announce(users=[user_id], children=[child_id])

    # -- consent state --------------------------------------------------------------------

    async def _granted(self, child_ids: Collection[int]) -> dict[int, dict[int, datetime]]:
        granted: dict[int, dict[int, datetime]] = {}
        for r in await self.pool.fetch(ACTIVE_CONSENTS_SQL, list(child_ids)):
            granted.setdefault(r["child_id"], {})[r["guardian_id"]] = r["granted_at"]
        return granted

    async def consent(self, child_id: int) -> Json:
        """One child's consent state and full consent history."""
        found = await self.pool.fetchval(
            "SELECT id FROM children WHERE id = $1 AND structure_id = $2", child_id, self.structure_id
        )
        if found is None:
            raise NotFound("no such child in this structure")
        # Who holds parental authority and who has consented is decided in one place (the
        # directory feeds the same ChildConsent to the publish policy).
        [state] = await self.directory.consents([child_id])
        granted = await self._granted([child_id])
        history = await self.pool.fetch(
            "SELECT k.guardian_id, u.display_name, k.granted_at, k.revoked_at, k.terms_version, k.declaration"
            " FROM consents k JOIN users u ON u.id = k.guardian_id"
            " WHERE k.child_id = $1 AND k.kind = 'publication' ORDER BY k.granted_at, k.id",
            child_id,
        )
        return {
            **_consent_summary(state, granted.get(child_id, {})),
            "history": [
                {
                    "guardian": {"id": r["guardian_id"], "name": r["display_name"]},
                    "granted_at": iso(r["granted_at"]),
                    "revoked_at": iso(r["revoked_at"]),
                    "terms_version": r["terms_version"],
                    "declaration": r["declaration"],
                }
                for r in history
            ],
        }

    async def consents(self) -> list[Json]:
        """The consent state of every current child of the structure, with the child's group
        and households: staff composing for a channel see whom they may tag."""
        rows = await self.pool.fetch(CURRENT_CHILDREN_SQL, self.structure_id)
        ids = [r["id"] for r in rows]
        states = {s.child_id: s for s in await self.directory.consents(ids)}
        granted = await self._granted(ids)
        return [
            _consent_summary(states[r["id"]], granted.get(r["id"], {}))
            | {"group_id": r["group_id"], "families": r["families"]}
            for r in rows
            if r["id"] in states
        ]

    # -- audit log ------------------------------------------------------------------------

    async def audit(self, *, limit: int, before: int | None, action: str | None) -> list[Json]:
        rows = await self.pool.fetch(AUDIT_SQL, self.structure_id, before, action, limit)
        return [
            {
                "id": r["id"],
                "at": iso(r["at"]),
                "actor": None if r["actor_id"] is None else {"id": r["actor_id"], "name": r["actor_name"]},
                "action": r["action"],
                "subject_type": r["subject_type"],
                "subject_id": r["subject_id"],
                "details": r["details"],
            }
            for r in rows
        ]
