"""The demo structure, seeded idempotently: "Crèche Les Petits Pas".

Part of the external contract (clients and the web app's tests rely on these accounts):
- admin@demo.test: admin; staff@demo.test: staff of Bébés and Grands;
- martin@demo.test: sole holder of parental authority of Léa Martin (Bébés), consent
  given, may post;
- Hugo Dupont (Grands): separated parents dupont.mere@ and dupont.pere@demo.test each hold
  parental authority, in two households; only the mother has consented;
- bernard@demo.test: guardian of Emma and Louis Bernard (Grands), consent given,
  consultation only (may not post).
Every demo account's password is PROCRECHE_DEMO_PASSWORD if set, else one generated at the
first seeding and kept in DATA/demo-password (mode 600).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from realtime.consent import declaration
from realtime.database import Pool
from realtime.passwords import Passwords

STRUCTURE = "Crèche Les Petits Pas"
SEEDED_ON = datetime(2026, 9, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DemoUser:
    email: str
    name: str
    role: str


USERS = [
    DemoUser("admin@demo.test", "Claire Admin", "admin"),
    DemoUser("staff@demo.test", "Sophie Éducatrice", "staff"),
    DemoUser("martin@demo.test", "Julie Martin", "guardian"),
    DemoUser("dupont.mere@demo.test", "Anne Dupont", "guardian"),
    DemoUser("dupont.pere@demo.test", "Marc Dupont", "guardian"),
    DemoUser("bernard@demo.test", "Paul Bernard", "guardian"),
]

# (first, last, group, [(guardian email, parental authority, consultation, may post, consented)])
CHILDREN = [
    ("Léa", "Martin", "Bébés", [("martin@demo.test", True, True, True, True)]),
    (
        "Hugo",
        "Dupont",
        "Grands",
        [
            ("dupont.mere@demo.test", True, True, True, True),
            ("dupont.pere@demo.test", True, True, True, False),
        ],
    ),
    ("Emma", "Bernard", "Grands", [("bernard@demo.test", True, True, False, True)]),
    ("Louis", "Bernard", "Grands", [("bernard@demo.test", True, True, False, True)]),
]

# Households: name → (guardians, children by first name)
FAMILIES = {
    "Famille Martin": (["martin@demo.test"], ["Léa"]),
    "Famille Dupont (mère)": (["dupont.mere@demo.test"], ["Hugo"]),
    "Famille Dupont (père)": (["dupont.pere@demo.test"], ["Hugo"]),
    "Famille Bernard": (["bernard@demo.test"], ["Emma", "Louis"]),
}


def demo_password(data_dir: Path, configured: str | None) -> tuple[str, bool]:
    """The demo password, and whether it was generated just now."""
    if configured:
        return configured, False
    path = data_dir / "demo-password"
    if path.exists():
        return path.read_text(encoding="utf-8").strip(), False
    data_dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    path.touch(mode=0o600)
    path.write_text(password + "\n", encoding="utf-8")
    return password, True


async def seed(pool: Pool, passwords: Passwords, password: str) -> dict[str, int]:
    """Create what is missing of the demo; returns the ids of the demo's households.
    Demo accounts whose password is not `password` get it (hashed) again."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('procreche demo'))")
        structure = await _upsert(
            conn,
            "INSERT INTO structures (name, guardians_may_post, retention_months) VALUES ($1, true, 12)"
            " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            STRUCTURE,
        )
        groups = {
            name: await _upsert(
                conn,
                "INSERT INTO groups (structure_id, name) VALUES ($1, $2)"
                " ON CONFLICT (structure_id, name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
                structure,
                name,
            )
            for name in ("Bébés", "Grands")
        }
        users: dict[str, int] = {}
        for user in USERS:
            row = await conn.fetchrow("SELECT id, password_hash FROM users WHERE email = $1", user.email)
            if row is None:
                user_id = await _upsert(
                    conn,
                    "INSERT INTO users (email, display_name, password_hash) VALUES ($1, $2, $3) RETURNING id",
                    user.email,
                    user.name,
                    await passwords.hash(password),
                )
            else:
                user_id = row["id"]
                if not await passwords.verify(row["password_hash"], password):
                    await conn.execute(
                        "UPDATE users SET password_hash = $2 WHERE id = $1",
                        user_id,
                        await passwords.hash(password),
                    )
            users[user.email] = user_id
            await conn.execute(
                "INSERT INTO memberships (structure_id, user_id, role) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                structure,
                user_id,
                user.role,
            )
        for group_id in groups.values():
            await conn.execute(
                "INSERT INTO staff_groups (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                group_id,
                users["staff@demo.test"],
            )
        terms_version = await conn.fetchval("SELECT max(version) FROM terms_versions")
        demo_name = {u.email: u.name for u in USERS}
        children: dict[str, int] = {}
        for first, last, group, guardians in CHILDREN:
            child_id = await conn.fetchval(
                "SELECT id FROM children WHERE structure_id = $1 AND first_name = $2 AND last_name = $3",
                structure,
                first,
                last,
            )
            if child_id is None:
                child_id = await _upsert(
                    conn,
                    "INSERT INTO children (structure_id, group_id, first_name, last_name, enrolled_on)"
                    " VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    structure,
                    groups[group],
                    first,
                    last,
                    date(2026, 9, 1),
                )
            children[first] = child_id
            for email, authority, consultation, may_post, consented in guardians:
                await conn.execute(
                    "INSERT INTO guardianships (child_id, user_id, parental_authority, consultation, may_post)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    child_id,
                    users[email],
                    authority,
                    consultation,
                    may_post,
                )
                if consented:
                    await conn.execute(
                        "INSERT INTO consents (child_id, guardian_id, kind, terms_version, declaration)"
                        " SELECT $1, $2, 'publication', $3, $4 WHERE NOT EXISTS (SELECT 1 FROM consents"
                        " WHERE child_id = $1 AND guardian_id = $2 AND kind = 'publication')",
                        child_id,
                        users[email],
                        terms_version,
                        declaration(demo_name[email], f"{first} {last}", STRUCTURE, SEEDED_ON),
                    )
        families: dict[str, int] = {}
        for name, (guardians_of, kids) in FAMILIES.items():
            family_id = await _upsert(
                conn,
                "INSERT INTO families (structure_id, name) VALUES ($1, $2)"
                " ON CONFLICT (structure_id, name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
                structure,
                name,
            )
            families[name] = family_id
            for email in guardians_of:
                await conn.execute(
                    "INSERT INTO family_members (family_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    family_id,
                    users[email],
                )
            for kid in kids:
                await conn.execute(
                    "INSERT INTO family_children (family_id, child_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    family_id,
                    children[kid],
                )
        return families


async def _upsert(conn: PoolConnectionProxy[asyncpg.Record], sql: str, *args: object) -> int:
    value = await conn.fetchval(sql, *args)
    return int(value)
