"""Read positions: how far each user has read each channel (a receipt covers every seq up
to it). Stored in Postgres, one row per user and channel, only ever moving forward."""

from __future__ import annotations

from typing import Any

from realtime.database import Pool

UPSERT = """
INSERT INTO receipts (channel, user_id, seq) VALUES ($1, $2, $3)
ON CONFLICT (channel, user_id) DO UPDATE SET seq = EXCLUDED.seq, read_at = now()
WHERE receipts.seq < EXCLUDED.seq
RETURNING seq
"""

LIST = """
SELECT r.user_id, u.display_name, r.seq, r.read_at FROM receipts r JOIN users u ON u.id = r.user_id
WHERE r.channel = $1 ORDER BY r.seq DESC, r.user_id
"""


class Receipts:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def mark(self, channel: str, user_id: int, seq: int) -> bool:
        """Record that the user read up to `seq`; False if they had already read as far."""
        return await self.pool.fetchval(UPSERT, channel, user_id, seq) is not None

    async def position(self, channel: str, user_id: int) -> int:
        """How far the user has read the channel (0: nothing yet)."""
        seq = await self.pool.fetchval("SELECT seq FROM receipts WHERE channel = $1 AND user_id = $2", channel, user_id)
        return 0 if seq is None else int(seq)

    async def of(self, channel: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(LIST, channel)
        return [
            {"user": {"id": r["user_id"], "name": r["display_name"]}, "seq": r["seq"], "at": r["read_at"].isoformat()}
            for r in rows
        ]
