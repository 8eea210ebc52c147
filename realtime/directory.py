"""Facts for the permission policy, and the user's own view (`/api/me`), from Postgres."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from realtime.channels import Channel, ChannelKind
from realtime.database import Pool
from realtime.permissions import (
    ChannelFacts,
    ChildConsent,
    ChildFacts,
    FamilyFacts,
    GroupFacts,
    Guardianship,
    Holder,
    Principal,
    StructureFacts,
    UserFacts,
    may_subscribe,
)

PRINCIPAL_SQL = """
SELECT u.id, u.display_name, u.disabled_at IS NOT NULL AS disabled,
       EXISTS (SELECT 1 FROM terms_acceptances a
               WHERE a.user_id = u.id AND a.version = (SELECT max(version) FROM terms_versions))
         AS terms_accepted,
       ARRAY(SELECT structure_id FROM memberships m
             WHERE m.user_id = u.id AND m.role IN ('staff', 'admin')) AS staff_of,
       ARRAY(SELECT structure_id FROM memberships m
             WHERE m.user_id = u.id AND m.role = 'admin') AS admin_of,
       ARRAY(SELECT DISTINCT structure_id FROM memberships m WHERE m.user_id = u.id) AS member_of,
       ARRAY(SELECT family_id FROM family_members f WHERE f.user_id = u.id) AS households
FROM users u WHERE u.id = $1
"""


# A child is current until the end of their last day (a leaving date in the future counts).
CURRENT_CHILD = "(c.left_on IS NULL OR c.left_on >= current_date)"

CONSENTS_SQL = """
SELECT c.id, c.structure_id, c.first_name || ' ' || c.last_name AS name,
       ARRAY(SELECT g.user_id FROM guardianships g WHERE g.child_id = c.id AND g.parental_authority
             ORDER BY g.user_id) AS holder_ids,
       ARRAY(SELECT u.display_name FROM guardianships g JOIN users u ON u.id = g.user_id
             WHERE g.child_id = c.id AND g.parental_authority ORDER BY g.user_id) AS holder_names,
       ARRAY(SELECT k.guardian_id FROM consents k JOIN guardianships g
               ON g.child_id = k.child_id AND g.user_id = k.guardian_id AND g.parental_authority
             WHERE k.child_id = c.id AND k.kind = 'publication' AND k.revoked_at IS NULL) AS consented
FROM children c WHERE c.id = ANY($1::bigint[]) ORDER BY c.id
"""


class Directory:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def principal(self, user_id: int) -> Principal | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(PRINCIPAL_SQL, user_id)
            if row is None:
                return None
            rows = await conn.fetch(
                "SELECT child_id, parental_authority, consultation, may_post FROM guardianships WHERE user_id = $1",
                user_id,
            )
        return Principal(
            user_id=row["id"],
            name=row["display_name"],
            disabled=row["disabled"],
            terms_accepted=row["terms_accepted"],
            staff_of=frozenset(row["staff_of"]),
            admin_of=frozenset(row["admin_of"]),
            member_of=frozenset(row["member_of"]),
            households=frozenset(row["households"]),
            guardianships={r["child_id"]: Guardianship(**r) for r in rows},
        )

    async def channel_facts(self, channel: Channel) -> ChannelFacts:
        if channel.kind is ChannelKind.FAMILY:
            row = await self.pool.fetchrow(
                "SELECT f.id, f.structure_id, s.guardians_may_post,"
                " ARRAY(SELECT child_id FROM family_children fc WHERE fc.family_id = f.id) AS child_ids"
                " FROM families f JOIN structures s ON s.id = f.structure_id WHERE f.id = $1",
                channel.id,
            )
            if row is None:
                return None
            return FamilyFacts(row["id"], row["structure_id"], row["guardians_may_post"], frozenset(row["child_ids"]))
        if channel.kind is ChannelKind.CHILD:
            row = await self.pool.fetchrow("SELECT id, structure_id FROM children WHERE id = $1", channel.id)
            return None if row is None else ChildFacts(row["id"], row["structure_id"])
        if channel.kind is ChannelKind.GROUP:
            row = await self.pool.fetchrow(
                "SELECT g.id, g.structure_id, ARRAY(SELECT c.id FROM children c"
                f" WHERE c.group_id = g.id AND {CURRENT_CHILD}) AS child_ids FROM groups g WHERE g.id = $1",
                channel.id,
            )
            return None if row is None else GroupFacts(row["id"], row["structure_id"], frozenset(row["child_ids"]))
        if channel.kind is ChannelKind.STRUCTURE:
            found = await self.pool.fetchval("SELECT id FROM structures WHERE id = $1", channel.id)
            return None if found is None else StructureFacts(found)
        found = await self.pool.fetchval("SELECT id FROM users WHERE id = $1", channel.id)
        return None if found is None else UserFacts(found)

    async def structure_children(self, structure_id: int) -> frozenset[int]:
        rows = await self.pool.fetch(
            f"SELECT id FROM children c WHERE structure_id = $1 AND {CURRENT_CHILD}", structure_id
        )
        return frozenset(r["id"] for r in rows)

    async def consents(self, child_ids: Collection[int]) -> list[ChildConsent]:
        """Each child's holders of parental authority and who of them has consented now."""
        rows = await self.pool.fetch(CONSENTS_SQL, list(child_ids))
        return [
            ChildConsent(
                child_id=r["id"],
                structure_id=r["structure_id"],
                name=r["name"],
                holders=tuple(Holder(i, n) for i, n in zip(r["holder_ids"], r["holder_names"], strict=True)),
                consented=frozenset(r["consented"]),
            )
            for r in rows
        ]

    async def me(self, p: Principal) -> dict[str, Any]:
        """The user, roles, children, households, and the channels they may subscribe to."""
        async with self.pool.acquire() as conn:
            user = await conn.fetchrow("SELECT id, email, display_name FROM users WHERE id = $1", p.user_id)
            roles = await conn.fetch(
                "SELECT m.structure_id, s.name AS structure, m.role FROM memberships m"
                " JOIN structures s ON s.id = m.structure_id WHERE m.user_id = $1 ORDER BY 1, 3",
                p.user_id,
            )
            children = await conn.fetch(
                "SELECT c.id, c.first_name, c.last_name, c.structure_id, c.group_id, g.name AS group_name,"
                " gs.parental_authority, gs.consultation, gs.may_post"
                " FROM guardianships gs JOIN children c ON c.id = gs.child_id"
                " LEFT JOIN groups g ON g.id = c.group_id WHERE gs.user_id = $1 ORDER BY c.id",
                p.user_id,
            )
            families = await conn.fetch(
                "SELECT f.id, f.name, f.structure_id,"
                " ARRAY(SELECT child_id FROM family_children fc WHERE fc.family_id = f.id ORDER BY 1) AS children"
                " FROM family_members m JOIN families f ON f.id = m.family_id WHERE m.user_id = $1 ORDER BY f.id",
                p.user_id,
            )
            staff_families = await conn.fetch(
                "SELECT id, name FROM families WHERE structure_id = ANY($1::bigint[]) ORDER BY id",
                list(p.staff_of),
            )
            staff_children = await conn.fetch(
                "SELECT id, first_name, last_name FROM children c"
                f" WHERE structure_id = ANY($1::bigint[]) AND {CURRENT_CHILD} ORDER BY id",
                list(p.staff_of),
            )
            structures = await conn.fetch(
                "SELECT id, name FROM structures WHERE id = ANY($1::bigint[]) ORDER BY id", list(p.member_of)
            )
            # Staff: every group of their structures; guardians: their children's groups.
            groups = await conn.fetch(
                "SELECT g.id, g.name FROM groups g WHERE g.structure_id = ANY($1::bigint[])"
                " OR g.id IN (SELECT c.group_id FROM children c WHERE c.id = ANY($2::bigint[]))"
                " ORDER BY g.id",
                list(p.staff_of),
                list(p.guardianships),
            )
        candidates: dict[str, str] = {f"user:{p.user_id}": p.name}
        for row in structures:
            candidates[f"structure:{row['id']}"] = row["name"]
        for row in groups:
            candidates[f"group:{row['id']}"] = row["name"]
        for row in [*families, *staff_families]:
            candidates[f"family:{row['id']}"] = row["name"]
        for row in [*children, *staff_children]:
            candidates[f"child:{row['id']}"] = f"{row['first_name']} {row['last_name']}"
        channels = []
        for name, title in candidates.items():
            channel = Channel.parse(name)
            # The list is what the policy allows, asked of the policy itself: never a second copy of it.
            if may_subscribe(p, channel, await self.channel_facts(channel)).allowed:
                channels.append({"channel": name, "title": title})
        assert user is not None
        return {
            "user": {"id": user["id"], "email": user["email"], "name": user["display_name"]},
            "roles": [dict(r) for r in roles],
            "children": [
                {
                    "id": r["id"],
                    "first_name": r["first_name"],
                    "last_name": r["last_name"],
                    "structure_id": r["structure_id"],
                    "group": r["group_name"],
                    "parental_authority": r["parental_authority"],
                    "consultation": r["consultation"],
                    "may_post": r["may_post"],
                }
                for r in children
            ],
            "families": [dict(r) for r in families],
            "channels": channels,
        }
