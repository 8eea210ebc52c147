"""Wire codecs: one frame schema, two encodings, chosen by WebSocket subprotocol.

A codec only turns frames (plain dicts) into bytes and back; it knows nothing of ops.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

import msgpack

from realtime.errors import BadRequest

JSON_SUBPROTOCOL = "procreche.v1.json"
MSGPACK_SUBPROTOCOL = "procreche.v1.msgpack"


class Codec(Protocol):
    subprotocol: str
    binary: bool

    def encode(self, frame: dict[str, Any]) -> bytes: ...

    def decode(self, data: bytes | str) -> object: ...


LONE_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _encodable(value: object) -> bool:
    # Iterative: json.loads accepts nesting almost as deep as the recursion limit, so a
    # recursive walk from deeper in the stack would raise RecursionError.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


class LoneSurrogate(ValueError):
    """The JSON escapes an unpaired UTF-16 surrogate ("\\ud800"), which no UTF-8 text can
    carry: it would fail far later (echoing it back, hashing it, storing it)."""


def load_json(data: str) -> object:
    """JSON text as values, for the WebSocket frames and the HTTP bodies alike: ValueError
    when it is not JSON or nests deeper than Python parses, LoneSurrogate as above."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if LONE_SURROGATE_ESCAPE.search(data) and not _encodable(value):
        raise LoneSurrogate("unpaired UTF-16 surrogate")
    return value


class JsonCodec:
    subprotocol = JSON_SUBPROTOCOL
    binary = False

    def encode(self, frame: dict[str, Any]) -> bytes:
        return json.dumps(frame, ensure_ascii=False, separators=(",", ":")).encode()

    def decode(self, data: bytes | str) -> object:
        if isinstance(data, bytes):
            raise BadRequest("binary frames are not accepted on the JSON subprotocol", code="bad_frame")
        try:
            return load_json(data)
        except LoneSurrogate:
            raise BadRequest("frame contains an unpaired UTF-16 surrogate", code="bad_frame") from None
        except ValueError:
            raise BadRequest("frame is not valid JSON", code="bad_frame") from None


class MsgpackCodec:
    subprotocol = MSGPACK_SUBPROTOCOL
    binary = True

    def encode(self, frame: dict[str, Any]) -> bytes:
        return msgpack.packb(frame)

    def decode(self, data: bytes | str) -> object:
        if isinstance(data, str):
            raise BadRequest("text frames are not accepted on the msgpack subprotocol", code="bad_frame")
        try:
            # Bounded containers: a 64 KiB frame must not expand into a huge structure.
            return msgpack.unpackb(data, max_array_len=4096, max_map_len=1024, strict_map_key=True)
        except (ValueError, msgpack.UnpackException, TypeError):
            raise BadRequest("frame is not valid msgpack", code="bad_frame") from None


CODECS: dict[str, Codec] = {c.subprotocol: c for c in (MsgpackCodec(), JsonCodec())}


def choose(offered: list[str]) -> Codec | None:
    """The first subprotocol the client offers that we speak, in the client's order."""
    for name in offered:
        codec = CODECS.get(name)
        if codec is not None:
            return codec
    return None
