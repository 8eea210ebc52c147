"""Publication consent (image rights): a holder of parental authority signs or revokes the
annex declaration for their child. Revoking withdraws, from families' view, everything
published that tags the child: in Postgres, in the Redis history, and live.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from realtime import audit
from realtime.bus import Bus
from realtime.channels import Channel
from realtime.database import Pool
from realtime.directory import Directory
from realtime.errors import Forbidden, NotFound
from realtime.permissions import Principal, may_sign_consent

DECLARATION = (
    "Je, soussigné(e) {guardian}, déclare être titulaire de l'autorité parentale sur {child} et consentir "
    "à la publication, par {structure}, de photos, vidéos et contenus identifiant {child}, pour toute la "
    "durée de son accueil. Ce consentement est gratuit et révocable à tout moment. Fait le {date}."
)

CHILD_SQL = """
SELECT c.id, c.first_name || ' ' || c.last_name AS name, c.structure_id, c.group_id, s.name AS structure,
       ARRAY(SELECT family_id FROM family_children f WHERE f.child_id = c.id) AS families
FROM children c JOIN structures s ON s.id = c.structure_id WHERE c.id = $1
"""


def declaration(guardian: str, child: str, structure: str, on: datetime) -> str:
    return DECLARATION.format(guardian=guardian, child=child, structure=structure, date=on.date().isoformat())


class Consents:
    def __init__(self, pool: Pool, directory: Directory, bus: Bus) -> None:
        self.pool = pool
        self.directory = directory
        self.bus = bus

    async def _child(self, p: Principal, child_id: int) -> Any:
        # Guardians of the child only; any other id is "not found", so ids cannot be probed.
        if child_id not in p.guardianships:
            raise NotFound("no such child")
        row = await self.pool.fetchrow(CHILD_SQL, child_id)
        if row is None:
            raise NotFound("no such child")
        return row

    async def state(self, p: Principal, child_id: int) -> dict[str, Any]:
        """What a guardian sees: every holder's consent, theirs, and the text they would sign."""
        child = await self._child(p, child_id)
        [consent] = await self.directory.consents([child_id])
        mine = await self.pool.fetchrow(
            "SELECT granted_at, declaration, terms_version FROM consents WHERE child_id = $1 AND guardian_id = $2"
            " AND kind = 'publication' AND revoked_at IS NULL",
            child_id,
            p.user_id,
        )
        return {
            "child": {"id": child["id"], "name": child["name"]},
            "structure": {"id": child["structure_id"], "name": child["structure"]},
            "complete": consent.complete,
            "holders": [
                {"id": h.user_id, "name": h.name, "consented": h.user_id in consent.consented} for h in consent.holders
            ],
            "mine": None
            if mine is None
            else {
                "granted_at": mine["granted_at"].isoformat(),
                "declaration": mine["declaration"],
                "terms_version": mine["terms_version"],
            },
            "declaration": declaration(p.name, child["name"], child["structure"], datetime.now(UTC)),
        }

    async def _holder_of(self, p: Principal, child_id: int) -> Any:
        """The child, once `p` is shown to hold parental authority over them."""
        child = await self._child(p, child_id)
        if not (verdict := may_sign_consent(p, child_id)).allowed:
            raise Forbidden("only a holder of parental authority signs or revokes this consent", code=verdict.code)
        return child

    @staticmethod
    async def _audit(conn: Any, p: Principal, child: Any, action: str, consent_id: int) -> None:
        await audit.record(
            conn,
            actor_id=p.user_id,
            structure_id=child["structure_id"],
            action=action,
            subject_type="child",
            subject_id=child["id"],
            details={"consent_id": consent_id},
        )

    async def sign(self, p: Principal, child_id: int, declared: object) -> dict[str, Any]:
        child = await self._holder_of(p, child_id)
        if declared is not True:
            raise Forbidden(
                "the declaration must be accepted explicitly ('declare': true)", code="declaration_required"
            )
        now = datetime.now(UTC)
        text = declaration(p.name, child["name"], child["structure"], now)
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO consents (child_id, guardian_id, kind, granted_at, terms_version, declaration)"
                " SELECT $1, $2, 'publication', $3, (SELECT max(version) FROM terms_versions), $4"
                " ON CONFLICT (child_id, guardian_id, kind) WHERE revoked_at IS NULL DO NOTHING RETURNING id",
                child_id,
                p.user_id,
                now,
                text,
            )
            if inserted is not None:
                await self._audit(conn, p, child, "consent.grant", inserted)
        return await self.state(p, child_id)

    async def revoke(self, p: Principal, child_id: int) -> dict[str, Any]:
        child = await self._holder_of(p, child_id)
        async with self.pool.acquire() as conn, conn.transaction():
            revoked = await conn.fetchval(
                "UPDATE consents SET revoked_at = now() WHERE child_id = $1 AND guardian_id = $2"
                " AND kind = 'publication' AND revoked_at IS NULL RETURNING id",
                child_id,
                p.user_id,
            )
            if revoked is not None:
                await self._audit(conn, p, child, "consent.revoke", revoked)
        withdrawn = await self.withdraw_content(child) if revoked is not None else 0
        return await self.state(p, child_id) | {"withdrawn": withdrawn}

    async def withdraw_content(self, child: Any) -> int:
        """Withdraw every message tagging the child, wherever it was published: persisted
        ones from Postgres, recent or not yet persisted ones from each circle channel's
        Redis history. A publish racing this revocation re-checks consent after its own
        write, so nothing slips between the two."""
        child_id = child["id"]
        rows = await self.pool.fetch(
            "SELECT m.id::text AS id, m.channel FROM messages m JOIN message_children t ON t.message_id = m.id"
            " WHERE t.child_id = $1 AND m.withdrawn_at IS NULL",
            child_id,
        )
        found = {(r["channel"], r["id"]) for r in rows}
        circle = [f"child:{child_id}", f"structure:{child['structure_id']}"]
        circle += [f"family:{f}" for f in child["families"]]
        if child["group_id"] is not None:
            circle.append(f"group:{child['group_id']}")
        histories = await asyncio.gather(*(self.bus.history_tagging(Channel.parse(c), child_id) for c in circle))
        found |= {(c, m) for c, ids in zip(circle, histories, strict=True) for m in ids}
        done = [await self.bus.withdraw(Channel.parse(c), m, "consent_revoked") for c, m in sorted(found)]
        return sum(done)
