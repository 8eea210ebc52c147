"""Channel names: `<kind>:<id>`, parsed once at the edge into a typed value."""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass

from realtime.errors import BadRequest

MAX_ID = 2**63 - 1


class ChannelKind(enum.StrEnum):
    CHILD = "child"
    FAMILY = "family"
    GROUP = "group"
    STRUCTURE = "structure"
    USER = "user"


@dataclass(frozen=True, slots=True)
class Channel:
    kind: ChannelKind
    id: int

    @property
    def name(self) -> str:
        return f"{self.kind.value}:{self.id}"

    def __str__(self) -> str:
        return self.name

    def partition(self, partitions: int) -> int:
        # crc32 is stable across processes and versions, unlike hash().
        return zlib.crc32(self.name.encode()) % partitions

    @classmethod
    def parse(cls, name: object) -> Channel:
        if not isinstance(name, str) or len(name) > 64:
            raise BadRequest("channel must be a string like 'family:42'", code="bad_channel")
        kind_text, sep, id_text = name.partition(":")
        try:
            kind = ChannelKind(kind_text)
        except ValueError:
            raise BadRequest(f"unknown channel kind {kind_text!r}", code="bad_channel") from None
        # isdigit() alone accepts '²' and other non-ASCII digits that int() rejects.
        if not sep or not id_text.isascii() or not id_text.isdigit() or id_text.startswith("0"):
            raise BadRequest("channel id must be a positive integer", code="bad_channel")
        value = int(id_text)
        if value > MAX_ID:
            raise BadRequest("channel id out of range", code="bad_channel")
        return cls(kind, value)
