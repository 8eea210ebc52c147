"""A published message: what Redis carries (msgpack record) and what clients receive.

The record travels without its sequence number: the publish script assigns the sequence
and stores it beside the record, so the record is packed once, before the script runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack

from realtime import bodies
from realtime.bodies import MAX_TEXT as MAX_TEXT

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Author:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    channel: str
    seq: int
    author: Author
    body: dict[str, Any]
    at: datetime
    msg_id: str
    children: tuple[int, ...] = field(default=())
    withdrawn: bool = False

    @property
    def concerns(self) -> tuple[int, ...]:
        """Every child this message is about: its tags, and a daily report's child. A
        guardian who may not consult one of them does not receive it."""
        return self.children + bodies.concerns(self.body)

    def frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "op": "message",
            "channel": self.channel,
            "seq": self.seq,
            "id": self.id,
            "author": {"id": self.author.id, "name": self.author.name},
            "body": self.body,
            "at": self.at.isoformat().replace("+00:00", "Z"),
        }
        if self.children:
            frame["children"] = list(self.children)
        if self.withdrawn:
            frame["withdrawn"] = True
        return frame


def pack_record(
    *,
    id: str,
    channel: str,
    author: Author,
    body: dict[str, Any],
    at: datetime,
    msg_id: str,
    children: tuple[int, ...] = (),
) -> bytes:
    return msgpack.packb(
        {
            "id": id,
            "ch": channel,
            "a": [author.id, author.name],
            "b": body,
            "t": (at - EPOCH) // MICROSECOND,
            "k": msg_id,
            "c": list(children),
        }
    )


def unpack_record(seq: int, data: bytes) -> Message:
    r = msgpack.unpackb(data)
    return Message(
        id=r["id"],
        channel=r["ch"],
        seq=seq,
        author=Author(r["a"][0], r["a"][1]),
        body=r["b"],
        at=EPOCH + r["t"] * MICROSECOND,
        msg_id=r["k"],
        children=tuple(r["c"]),
    )


def validate_body(body: object) -> dict[str, Any]:
    """The body of a publish, checked field by field (realtime.bodies); unknown fields refused."""
    return bodies.validate(body)
