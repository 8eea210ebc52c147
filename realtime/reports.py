"""Reports of messages (terms art. 14) and the structure's moderation queue.

A user reports a message they can see, with a reason. The open reports of one message are
one case of the queue: staff withdraw the message or dismiss the case, and every report of
it is resolved at once, each reporter being told the outcome. Filing, resolving and their
audit rows commit together.

Authorisation is not decided here: gateway/reports_api.py asks the policy first. The audit
names reports and messages by id, never the reason or the content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import asyncpg

from realtime import audit
from realtime.admin import iso
from realtime.database import Pool
from realtime.errors import NotFound, Throttled

Json: TypeAlias = dict[str, Any]
Decision = Literal["withdraw", "dismiss"]
DECISIONS: tuple[Decision, ...] = ("withdraw", "dismiss")
# A report is a person asking staff to look: a few dozen pending at once is plenty, and
# the cap keeps one account from flooding a structure's queue.
MAX_OPEN_PER_REPORTER = 50
MAX_REASON = 2000
MINE_LIMIT = 100
QUEUE_LIMIT = 200
STATE_OF: dict[Decision, str] = {"withdraw": "withdrawn", "dismiss": "dismissed"}


@dataclass(frozen=True, slots=True)
class Filed:
    report: Json
    created: bool  # False: the reporter had already reported this message, still open
    open_reports: int  # of this message, this one included


@dataclass(frozen=True, slots=True)
class Case:
    """A reported message and its open reports, oldest first."""

    message_id: str
    channel: str
    reports: list[Json]


@dataclass(frozen=True, slots=True)
class Resolved:
    report_id: int
    reporter_id: int | None


def _report_json(row: asyncpg.Record) -> Json:
    return {
        "id": row["id"],
        "channel": row["channel"],
        "message": str(row["message_id"]),
        "reason": row["reason"],
        "state": row["state"],
        "created_at": iso(row["created_at"]),
        "resolved_at": iso(row["resolved_at"]),
    }


LOCK_REPORTER = "SELECT pg_advisory_xact_lock(hashtextextended('report:' || $1::bigint, 0))"
REPORT_COLUMNS = "id, channel, message_id, reason, state, created_at, resolved_at"


class Reports:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def file(self, *, reporter_id: int, structure_id: int, channel: str, message_id: str, reason: str) -> Filed:
        async with self.pool.acquire() as conn, conn.transaction():
            # One reporter's filings are serialised, so the cap below is exact.
            await conn.execute(LOCK_REPORTER, reporter_id)
            existing = await conn.fetchrow(
                f"SELECT {REPORT_COLUMNS} FROM reports WHERE message_id = $1 AND reporter_id = $2 AND state = 'open'",
                message_id,
                reporter_id,
            )
            if existing is None:
                pending = await conn.fetchval(
                    "SELECT count(*) FROM reports WHERE reporter_id = $1 AND state = 'open'", reporter_id
                )
                if pending >= MAX_OPEN_PER_REPORTER:
                    raise Throttled(
                        f"at most {MAX_OPEN_PER_REPORTER} reports may wait for moderation at once",
                        code="too_many_reports",
                    )
                row = await conn.fetchrow(
                    "INSERT INTO reports (message_id, channel, structure_id, reporter_id, reason)"
                    f" VALUES ($1, $2, $3, $4, $5) RETURNING {REPORT_COLUMNS}",
                    message_id,
                    channel,
                    structure_id,
                    reporter_id,
                    reason,
                )
                assert row is not None
                await audit.record(
                    conn,
                    actor_id=reporter_id,
                    structure_id=structure_id,
                    action="report.file",
                    subject_type="message",
                    subject_id=message_id,
                    details={"report": row["id"], "channel": channel},
                )
            else:
                row = existing
            count = await conn.fetchval(
                "SELECT count(*) FROM reports WHERE message_id = $1 AND state = 'open'", message_id
            )
        return Filed(_report_json(row), existing is None, int(count))

    async def mine(self, reporter_id: int) -> list[Json]:
        rows = await self.pool.fetch(
            f"SELECT {REPORT_COLUMNS} FROM reports WHERE reporter_id = $1 ORDER BY id DESC LIMIT $2",
            reporter_id,
            MINE_LIMIT,
        )
        return [_report_json(r) for r in rows]

    async def queue(self, structure_id: int) -> list[Case]:
        """The open cases of the structure, the longest waiting first."""
        rows = await self.pool.fetch(
            """
            WITH cases AS (
                SELECT message_id, min(created_at) AS since FROM reports
                WHERE structure_id = $1 AND state = 'open'
                GROUP BY message_id ORDER BY since LIMIT $2
            )
            SELECT r.id, r.message_id, r.channel, r.reason, r.created_at, r.reporter_id,
                   u.display_name AS reporter_name, c.since
            FROM cases c
            JOIN reports r ON r.message_id = c.message_id AND r.state = 'open'
            LEFT JOIN users u ON u.id = r.reporter_id
            ORDER BY c.since, c.message_id, r.created_at
            """,
            structure_id,
            QUEUE_LIMIT,
        )
        cases: dict[str, Case] = {}
        for r in rows:
            key = str(r["message_id"])
            case = cases.setdefault(key, Case(key, r["channel"], []))
            case.reports.append(
                {
                    "id": r["id"],
                    "reason": r["reason"],
                    "reporter": None
                    if r["reporter_id"] is None
                    else {"id": r["reporter_id"], "name": r["reporter_name"]},
                    "created_at": iso(r["created_at"]),
                }
            )
        return list(cases.values())

    async def open_case(self, structure_id: int, message_id: str) -> str:
        """The channel of the message's open case in the structure; NotFound if none."""
        channel: str | None = await self.pool.fetchval(
            "SELECT channel FROM reports WHERE structure_id = $1 AND message_id = $2 AND state = 'open' LIMIT 1",
            structure_id,
            message_id,
        )
        if channel is None:
            raise NotFound("no open report of this message", code="not_found")
        return channel

    async def resolve(self, structure_id: int, message_id: str, decision: Decision, actor_id: int) -> list[Resolved]:
        """Close every open report of the message; NotFound if there is none (another
        moderator was first)."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE reports SET state = $3, resolved_by = $4, resolved_at = now()"
                " WHERE structure_id = $1 AND message_id = $2 AND state = 'open'"
                " RETURNING id, reporter_id",
                structure_id,
                message_id,
                STATE_OF[decision],
                actor_id,
            )
            if not rows:
                raise NotFound("no open report of this message", code="not_found")
            await audit.record(
                conn,
                actor_id=actor_id,
                structure_id=structure_id,
                action=f"moderation.{decision}",
                subject_type="message",
                subject_id=message_id,
                details={"reports": [r["id"] for r in rows]},
            )
        return [Resolved(r["id"], r["reporter_id"]) for r in rows]
