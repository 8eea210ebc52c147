"""Fact changes, announced to every gateway over Redis so that cached permission facts are
dropped and live connections re-checked within a second.

Whoever changes a fact (memberships, households, guardianships, consents, structure
settings, accounts, sessions) calls `announce` after the change is committed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgpack
from redis.asyncio import Redis

from realtime.keys import Keys


@dataclass(frozen=True, slots=True)
class Change:
    """What changed: every cached fact about these is stale."""

    users: frozenset[int] = frozenset()
    structures: frozenset[int] = frozenset()
    children: frozenset[int] = frozenset()
    families: frozenset[int] = frozenset()
    groups: frozenset[int] = frozenset()
    # Sessions to close now (logout, password change): SHA-256 digests of their tokens.
    sessions: frozenset[bytes] = frozenset()
    # Gateways to drain (`procreche drain`), by name; "*" drains them all.
    drain: frozenset[str] = frozenset()
    # Maintenance mode was switched on or off: every gateway reads it again.
    maintenance: bool = False

    def pack(self) -> bytes:
        return msgpack.packb(
            {
                "u": sorted(self.users),
                "s": sorted(self.structures),
                "c": sorted(self.children),
                "f": sorted(self.families),
                "g": sorted(self.groups),
                "t": sorted(self.sessions),
                "d": sorted(self.drain),
                "m": self.maintenance,
            }
        )

    @classmethod
    def unpack(cls, data: bytes) -> Change:
        raw = msgpack.unpackb(data)
        return cls(
            users=frozenset(raw.get("u", ())),
            structures=frozenset(raw.get("s", ())),
            children=frozenset(raw.get("c", ())),
            families=frozenset(raw.get("f", ())),
            groups=frozenset(raw.get("g", ())),
            sessions=frozenset(raw.get("t", ())),
            drain=frozenset(raw.get("d", ())),
            maintenance=bool(raw.get("m", False)),
        )


async def announce(
    redis: Redis,
    keys: Keys,
    *,
    users: Iterable[int] = (),
    structures: Iterable[int] = (),
    children: Iterable[int] = (),
    families: Iterable[int] = (),
    groups: Iterable[int] = (),
    sessions: Iterable[bytes] = (),
    drain: Iterable[str] = (),
    maintenance: bool = False,
) -> None:
    change = Change(
        frozenset(users),
        frozenset(structures),
        frozenset(children),
        frozenset(families),
        frozenset(groups),
        frozenset(sessions),
        frozenset(drain),
        maintenance,
    )
    await redis.publish(keys.control(), change.pack())
