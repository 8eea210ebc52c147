"""Protocol fuzzing against a live gateway, and the WebSocket edge cases its own protocol
layer (gateway/wsproto.py) controls.

Fuzzing (docs/protocol.md §2–§3, §8–§9): hypothesis draws pipelines of request frames,
valid, mistyped, malformed, oversized, of unknown ops, in both subprotocols, and sends them
to a real gateway (before and after `auth`). Every request frame gets exactly one `reply`,
in order, with the rid it carried (`null` when the frame is undecodable or its rid invalid)
and, when it fails, an error code that §8 documents for the WebSocket (never `internal`: a
fault the client's bytes provoked is a bug); or the connection is closed with a code that
§9 documents, for a reason the frames explain (1009 after an oversized one, 4403 after a
refused `auth`…). The gateway logs no error, a bystander (another user, subscribed to a
household channel) still receives what is published meanwhile, and /healthz answers.

The documented codes are read from docs/protocol.md: a new undocumented code fails here.
Hypothesis runs in a thread (its engine is synchronous) and hands each example to the
event loop that serves the gateway, so the gateway, the bystander and the fuzzing
connections live for the whole run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import re
import struct
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from realtime.client import Client
from realtime.codec import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL
from tests.conftest import Gateway, wait_for
from tests.figures import report
from tests.raw_ws import client_frame, frames_until_close, open_raw, read_frame

pytestmark = pytest.mark.usefixtures("demo_families")

PROTOCOL_DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
MAX_MESSAGE = 64 * 1024  # §2: a larger client message is closed with 1009
MAX_RID = 2**63 - 1
OPS = ("auth", "subscribe", "unsubscribe", "publish", "history", "withdraw", "read", "receipts", "typing", "presence")
EXAMPLES = 250  # per subprotocol
REPLY_WAIT = 30.0  # seconds: a bounded wait for a reply (a hang), not a timing assertion
FRAMES: dict[str, int] = {}  # per subprotocol, for the figures


# The documented codes (docs/protocol.md §8 and §9)


def _section(text: str, number: int) -> str:
    start = re.search(rf"^## {number}\. .*$", text, re.MULTILINE)
    assert start is not None, f"docs/protocol.md has no section {number}"
    end = re.search(r"^## \d+\. ", text[start.end() :], re.MULTILINE)
    return text[start.end() : start.end() + end.start()] if end else text[start.end() :]


def documented_ws_error_codes() -> frozenset[str]:
    """§8: the codes whose 'where' says WS or both (the others are HTTP's)."""
    codes = set()
    for line in _section(PROTOCOL_DOC.read_text(encoding="utf-8"), 8).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and (code := re.fullmatch(r"`([a-z_]+)`", cells[0])):
            where = cells[2]
            if where == "both" or (re.search(r"\bWS\b", where) and "handshake" not in where):
                codes.add(code.group(1))
    return frozenset(codes)


def documented_close_codes() -> frozenset[int]:
    """§9: the close codes the server sends."""
    section = _section(PROTOCOL_DOC.read_text(encoding="utf-8"), 9)
    return frozenset(int(m.group(1)) for m in re.finditer(r"^\|\s*(\d{4})\s*\|", section, re.MULTILINE))


ERROR_CODES = documented_ws_error_codes()
CLOSE_CODES = documented_close_codes()


def test_the_documented_codes_are_read_from_the_protocol_doc() -> None:
    # A sanity check of the parsing above, on codes §8 and §9 will always have.
    assert {"bad_frame", "unknown_op", "not_authenticated", "internal", "rate_limited"} <= ERROR_CODES
    assert not {"bad_request", "too_large", "unsupported_subprotocol", "origin_not_allowed"} & ERROR_CODES
    assert {1007, 1009, 1011, 1012, 1013, 4000, 4001, 4029, 4401, 4403, 4406} <= CLOSE_CODES


# What is sent, and what the client expects of it


@dataclass(frozen=True, repr=False)
class Shot:
    """One request frame on the wire and what the client knows of it beforehand."""

    label: str
    data: bytes | str
    rid: object = None  # the rid the reply carries: None when undecodable or the rid is invalid
    either_rid: bool = False  # nesting near the parser's depth limit: the rid, or None
    code: str | None = None  # the error code when the frame alone decides it
    oversized: bool = False  # over 64 KiB: the connection is closed with 1009

    def __repr__(self) -> str:
        data = self.data if len(self.data) <= 300 else self.data[:300]
        return f"Shot({self.label!r}, {data!r}{'…' if data is not self.data else ''}, rid={self.rid!r})"


@dataclass(frozen=True)
class Example:
    fresh: bool  # on a new connection, before auth (else on the authenticated one)
    shots: tuple[Shot, ...]


class Unencodable(Exception):
    """A value hypothesis drew that this client cannot put on the wire (never sent)."""


def _strings(value: object) -> Iterator[str]:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def expected_rid(frame: object) -> object:
    """§3.1: the rid a reply echoes, or None when the frame cannot carry one."""
    if not isinstance(frame, dict):
        return None
    rid = frame.get("rid")
    if isinstance(rid, bool):
        return None
    if isinstance(rid, int) and 0 <= rid <= MAX_RID:
        return rid
    if isinstance(rid, str) and 0 < len(rid) <= 64:
        return rid
    return None


def _decoded(subprotocol: str, data: bytes | str) -> tuple[bool, object]:
    """What the frame means, as §3 defines it: (decodable, value)."""
    if subprotocol == JSON_SUBPROTOCOL:
        if not isinstance(data, str):
            return False, None
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            return False, None
        return all(_utf8(s) for s in _strings(value)), value
    if not isinstance(data, bytes):
        return False, None
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, max_array_len=4096, max_map_len=1024)
    except (ValueError, msgpack.UnpackException, TypeError):
        return False, None
    return True, value


def shot(subprotocol: str, label: str, data: bytes | str, *, deep: object = False) -> Shot:
    """`deep`: the frame nests near the decoder's depth limit, and its rid is `deep` (or None)
    if the server's decoder takes it (its stack is deeper than ours: it may not)."""
    if len(data.encode() if isinstance(data, str) else data) > MAX_MESSAGE:
        return Shot(label, data, oversized=True)
    if deep is not False:
        return Shot(label, data, deep, either_rid=True)
    decodable, value = _decoded(subprotocol, data)
    rid = expected_rid(value) if decodable and isinstance(value, dict) else None
    code = None
    if rid is None:
        code = "bad_frame"
    elif isinstance(value, dict) and value.get("op") not in OPS:
        code = "unknown_op"
    return Shot(label, data, rid, code=code)


def encode(subprotocol: str, value: object, *, ascii_only: bool = False) -> bytes | str:
    """The frame on the wire: JSON text (lone surrogates as \\u escapes), or msgpack with
    str for strings (lone surrogates as the invalid UTF-8 they would be)."""
    if subprotocol == JSON_SUBPROTOCOL:
        ascii_only = ascii_only or not all(_utf8(s) for s in _strings(value))
        try:
            return json.dumps(value, ensure_ascii=ascii_only)
        except (ValueError, RecursionError) as exc:
            raise Unencodable(str(exc)) from None
    try:
        packed: bytes = msgpack.Packer(use_bin_type=True, unicode_errors="surrogatepass").pack(value)
    except (ValueError, OverflowError, TypeError) as exc:
        raise Unencodable(str(exc)) from None
    return packed


def nested(depth: int, leaf: str, *, subprotocol: str) -> bytes | str:
    """A value nested `depth` arrays deep, written directly (an encoder would recurse)."""
    if subprotocol == JSON_SUBPROTOCOL:
        return "[" * depth + leaf + "]" * depth
    return b"\x91" * depth + msgpack.packb(leaf)


def frame_with(subprotocol: str, head: dict[str, Any], name: str, raw_value: bytes | str) -> bytes | str:
    """`head` plus a field whose value is already encoded (a nesting an encoder refuses)."""
    if subprotocol == JSON_SUBPROTOCOL:
        assert isinstance(raw_value, str)
        return json.dumps(head)[:-1] + f", {json.dumps(name)}: {raw_value}}}"
    assert isinstance(raw_value, bytes)
    body = b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in head.items())
    count = len(head) + 1
    assert count < 16
    return bytes((0x80 | count,)) + body + msgpack.packb(name) + raw_value


# Strategies


@dataclass(frozen=True)
class World:
    """What the fuzzing user may touch in the demo (plausible values)."""

    token: str
    channels: tuple[str, ...]
    children: tuple[int, ...]


IMPLAUSIBLE_CHANNELS = (
    "family:0",
    "family:01",
    "family:+1",
    "Family:1",
    "family:",
    ":1",
    "family:1:2",
    "family:²",
    "family:9223372036854775808",
    "x" * 65,
    "",
    "family: 1",
    "user:-1",
)
FORBIDDEN_CHANNELS = ("family:999999", "user:1", "structure:99", "child:424242", "group:9223372036854775807")


def junk(subprotocol: str) -> st.SearchStrategy[object]:
    """Values of every JSON / msgpack type, plausible or not for any field."""
    msgpack_side = subprotocol == MSGPACK_SUBPROTOCOL
    ints = st.integers(-(2**63), 2**64 - 1) if msgpack_side else st.integers(-(10**30), 10**30)
    edges = [0, -1, 1, MAX_RID, 2**63, 2**64 - 1, -(2**63)]
    strings = st.text(max_size=12) | st.sampled_from(
        ["", " ", "\x00", "x" * 65, "é", "\ud800", "a\udfff", "\U0001f600"]
    )
    leaves: list[st.SearchStrategy[object]] = [
        st.none(),
        st.booleans(),
        ints,
        st.sampled_from(edges + ([] if msgpack_side else [10**30, -(10**30)])),
        st.floats(),
        st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1.0, 0.5]),
        strings,
    ]
    if msgpack_side:
        leaves.append(st.binary(max_size=12))
        leaves.append(st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4)))
    keys = map_keys(subprotocol)
    return st.recursive(
        st.one_of(leaves),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
        max_leaves=8,
    )


def map_keys(subprotocol: str) -> st.SearchStrategy[object]:
    """Map keys: str; on msgpack bin too (§3 says str, a client may send bin)."""
    keys: st.SearchStrategy[object] = st.text(max_size=6)
    return keys | st.binary(max_size=4) if subprotocol == MSGPACK_SUBPROTOCOL else keys


def either(plausible: st.SearchStrategy[object], subprotocol: str) -> st.SearchStrategy[object]:
    return plausible | plausible | junk(subprotocol)


def bodies(world: World, subprotocol: str) -> st.SearchStrategy[object]:
    text = st.text(min_size=1, max_size=40)
    times = st.sampled_from(["08:00", "12:30", "23:59", "24:00", "8:00", ""])
    return st.one_of(
        st.fixed_dictionaries({"kind": st.just("text"), "text": text}),
        st.fixed_dictionaries({"kind": st.just("text"), "text": st.sampled_from(["   ", "", "a\x00b", "x" * 10_001])}),
        st.fixed_dictionaries({"kind": st.just("announcement"), "title": text, "text": text}),
        st.fixed_dictionaries(
            {
                "kind": st.just("daily_report"),
                "child": st.sampled_from(world.children) | junk(subprotocol),
                "date": st.sampled_from(["2026-01-05", "2026-02-30", "20260105", ""]) | junk(subprotocol),
            },
            optional={
                "meals": st.lists(
                    st.fixed_dictionaries(
                        {"time": times, "food": text, "amount": st.sampled_from(["all", "some", ""])}
                    ),
                    max_size=2,
                ),
                "naps": st.lists(st.fixed_dictionaries({"start": times, "end": times}), max_size=2),
                "mood": st.sampled_from(["happy", "sad"]) | junk(subprotocol),
                "note": text | junk(subprotocol),
            },
        ),
        st.fixed_dictionaries(
            {"kind": st.just("media"), "media": st.lists(st.uuids().map(str), min_size=0, max_size=3)},
            optional={"text": text, "no_child_identifiable": st.sampled_from([True, False, 1])},
        ),
        st.fixed_dictionaries({"kind": st.just("text"), "text": text, "extra": junk(subprotocol)}),
        st.builds(
            lambda extra, valid: extra | valid,
            st.dictionaries(map_keys(subprotocol), junk(subprotocol), min_size=1, max_size=3),
            st.fixed_dictionaries({"kind": st.sampled_from(["text", "announcement"]), "text": text, "title": text}),
        ),
        junk(subprotocol),
    )


def requests(world: World, subprotocol: str) -> st.SearchStrategy[dict[str, object]]:
    """Requests of the ten ops, each field plausible (valid or near it) or of any type."""
    channels = st.sampled_from(world.channels) | st.sampled_from(FORBIDDEN_CHANNELS + IMPLAUSIBLE_CHANNELS)
    channel = either(channels, subprotocol)
    seqs = either(st.integers(1, 2**63 - 1) | st.sampled_from([0, -1, 2**63]), subprotocol)
    msg_ids = st.from_regex(r"[A-Za-z0-9_-]{8,64}", fullmatch=True) | st.sampled_from(["short", "x" * 65, "ab cd efgh"])
    tokens = st.sampled_from([world.token, "forged", "", "x" * 257]) | st.text(min_size=1, max_size=20)
    children = st.lists(st.sampled_from(world.children) | st.integers(-2, 10), max_size=4) | st.lists(
        st.integers(1, 60), min_size=51, max_size=52, unique=True
    )
    fields: dict[str, dict[str, st.SearchStrategy[object]]] = {
        "auth": {"token": either(tokens, subprotocol)},
        "subscribe": {
            "channel": channel,
            "since": either(st.none() | st.integers(0, 2**63 - 1) | st.just(2**63), subprotocol),
            "epoch": either(st.text(max_size=70), subprotocol),
            "presence": either(st.booleans(), subprotocol),
        },
        "unsubscribe": {"channel": channel},
        "publish": {
            "channel": channel,
            "msg_id": either(msg_ids, subprotocol),
            "body": bodies(world, subprotocol),
            "children": either(children, subprotocol),
        },
        "history": {"channel": channel, "before": seqs, "limit": either(st.integers(-1, 102), subprotocol)},
        "withdraw": {"channel": channel, "id": either(st.uuids().map(str) | st.text(max_size=70), subprotocol)},
        "read": {"channel": channel, "seq": seqs},
        "receipts": {"channel": channel},
        "typing": {"channel": channel},
        "presence": {"channel": channel},
    }
    rids = either(st.integers(0, MAX_RID) | st.text(min_size=1, max_size=64), subprotocol) | st.sampled_from(
        [-1, 2**63, "", "x" * 65, True, 1.0]
    )

    def one(op: str) -> st.SearchStrategy[dict[str, object]]:
        required = {"op": st.just(op), "rid": rids}
        optional = {"extra": junk(subprotocol)}
        if op in {"auth", "unsubscribe", "receipts", "typing", "presence", "read", "withdraw"}:
            required |= fields[op]
        elif op == "subscribe":
            required["channel"] = channel
            optional |= {k: v for k, v in fields[op].items() if k != "channel"}
        elif op == "publish":
            required |= {k: v for k, v in fields[op].items() if k != "children"}
            optional["children"] = fields[op]["children"]
        else:
            required |= {k: v for k, v in fields[op].items() if k != "limit"}
            optional["limit"] = fields[op]["limit"]
        return st.fixed_dictionaries(required, optional=optional)

    unknown_ops = st.fixed_dictionaries(
        {
            "op": st.sampled_from(["AUTH", "login", "reply", "message", " auth", "", "x" * 70_000])
            | st.text(max_size=10).filter(lambda op: op not in OPS)
            | junk(subprotocol).filter(lambda op: op not in OPS),
            "rid": rids,
        }
    )
    return st.one_of(*(one(op) for op in OPS), unknown_ops)


def shots(world: World, subprotocol: str) -> st.SearchStrategy[Shot]:
    json_side = subprotocol == JSON_SUBPROTOCOL

    @st.composite
    def request_shot(draw: st.DrawFn) -> Shot:
        frame = draw(requests(world, subprotocol))
        label = f"{frame['op'] if isinstance(frame['op'], str) and len(frame['op']) < 20 else 'unknown'}"
        try:
            data = encode(subprotocol, frame, ascii_only=draw(st.booleans()))
        except Unencodable:
            data = encode(subprotocol, {"op": "dance", "rid": 1})
        return shot(subprotocol, label, data)

    @st.composite
    def malformed(draw: st.DrawFn) -> Shot:
        kind = draw(st.sampled_from(["garbage", "wrong_type", "not_an_object", "boundary", "containers"]))
        if kind == "garbage":
            if json_side:
                data: bytes | str = draw(
                    st.text(max_size=40)
                    | st.sampled_from(['{"op": "auth"', "{", "", " ", "nul\x00l", '{"rid": 1,}', "[1, 2]", "'x'"])
                )
            else:
                data = draw(st.binary(max_size=40) | st.sampled_from([b"", b"\xc1", b"\x81\xa2op", b"\x92\x01"]))
        elif kind == "wrong_type":
            # A binary frame on JSON, a text frame on msgpack: whatever it holds.
            valid = {"op": "presence", "rid": draw(st.integers(0, 99)), "channel": world.channels[0]}
            data = json.dumps(valid).encode() if json_side else json.dumps(valid)
        elif kind == "not_an_object":
            value = draw(junk(subprotocol).filter(lambda v: not isinstance(v, dict)))
            try:
                data = encode(subprotocol, value)
            except Unencodable:
                data = encode(subprotocol, [])
        elif kind == "boundary":
            # A frame of exactly 64 KiB is answered; one byte more is not (closed with 1009).
            over = draw(st.sampled_from([0, 1, 1000, 40_000]))
            data = padded(subprotocol, {"op": "presence", "rid": 5, "channel": world.channels[0]}, MAX_MESSAGE + over)
        else:
            data = containers(subprotocol, draw(st.sampled_from(["array", "map"])), draw(st.booleans()))
        return shot(subprotocol, kind, data)

    @st.composite
    def oversized(draw: st.DrawFn) -> Shot:
        size = draw(st.sampled_from([MAX_MESSAGE + 1, MAX_MESSAGE + 2, 100_000, 300_000]))
        return shot(subprotocol, "oversized", padded(subprotocol, {"op": "auth", "rid": 9}, size))

    weighted = [request_shot()] * 8 + [malformed(), malformed(), oversized()]
    weighted += [one_of_list(deep_shots(world, subprotocol)), one_of_list(raw_shots(subprotocol))]
    return st.one_of(weighted)


def one_of_list(items: list[Shot]) -> st.SearchStrategy[Shot]:
    # By index: sampled_from would repr the whole list (megabytes of frames).
    return st.integers(0, len(items) - 1).map(items.__getitem__)


DEPTHS = (10, 500, 900, 950, 975, 990, 1000, 1024, 1025, 2000, 30_000)


def deep_shots(world: World, subprotocol: str) -> list[Shot]:
    """Nesting around the decoders' limits (JSON: the recursion limit; msgpack: 1024), in
    each place a frame may hold it."""
    json_side = subprotocol == JSON_SUBPROTOCOL
    out = []
    for depth in DEPTHS:
        for leaf in ("1", '"\\ud800"', '"x"', "{}") if json_side else ("x",):
            value = nested(depth, leaf, subprotocol=subprotocol)
            publish = {"op": "publish", "rid": 3, "channel": world.channels[0], "msg_id": "fuzz-deep-1"}
            typing = {"op": "typing", "rid": 4, "channel": world.channels[0]}
            datas = (
                (value, None),
                (frame_with(subprotocol, publish, "body", value), 3),
                (frame_with(subprotocol, {"op": "presence"}, "rid", value), None),
                (frame_with(subprotocol, {"rid": 4}, "op", value), 4),
                (frame_with(subprotocol, typing, "extra", value), 4),
            )
            out += [shot(subprotocol, "deep", data, deep=rid) for data, rid in datas]
    return out


def raw_shots(subprotocol: str) -> list[Shot]:
    """What an encoder never writes."""
    if subprotocol == JSON_SUBPROTOCOL:
        texts = [
            '{"op": "read", "rid": 1, "channel": "family:1", "seq": 1' + "0" * 5000 + "}",
            '{"op": "read", "rid": 1' + "0" * 5000 + "}",
            '{"op": "presence", "rid": 1e999, "channel": "family:1"}',
            '{"op": "presence", "rid": NaN, "channel": "family:1"}',
            '{"op": "presence", "rid": -Infinity}',
            '{"op": "presence", "rid": 2, "\\udc00": 1}',
            '{"op": "presence", "rid": 2, "channel": "family:\\ud83d\\ude00"}',
            '{"op": "presence", "rid": "\\ud83d", "channel": "family:1"}',
            '{"op": "presence", "rid": 3, "rid": "x", "channel": "family:1"}',
            '{"op": "subscribe", "rid": 6, "channel": "family:1", "since": 1.0}',
            '\ufeff{"op": "presence", "rid": 7}',
            '{"op": "presence", "rid": 8, "channel": "family:1"} {}',
        ]
        return [shot(subprotocol, "raw", t) for t in texts]
    frames = [
        b"\x82\xa2op\xa8presence\xa3rid\xcf" + (2**64 - 1).to_bytes(8, "big"),
        b"\x82\xa2op\xa8presence\xa3rid\xd3" + (-1).to_bytes(8, "big", signed=True),
        b"\x82\xa2op\xa8presence\xa3rid\xcb" + b"\x7f\xf8" + b"\x00" * 6,  # NaN
        b"\x82\xc4\x02op\xa8presence\xa3rid\x01",  # a bin key
        b"\x82\xa2op\xc4\x08presence\xa3rid\x01",  # a bin op
        b"\x82\xa2op\xa8presence\xa3rid\xa3\xed\xa0\x80",  # a CESU surrogate in a str
        b"\x82\xa2op\xa8presence\xa3rid\xd6\xff\x00\x00\x00\x01",  # a timestamp ext
        b"\x82\xa2op\xa8presence\xa3rid\xd4\xff\x01",  # a broken timestamp ext
        b"\x82\x01\x02\xa3rid\x01",  # an int key
        b"\x81\x90\x01",  # an array key
        b"\x82\xa2op\xa8presence\xa3rid\x01\xc0",  # extra data
        b"\xdf\xff\xff\xff\xff",  # a map announcing 4 billion entries
        b"\xdd\x7f\xff\xff\xff",  # an array announcing 2 billion
    ]
    return [shot(subprotocol, "raw", f) for f in frames]


def wrong_values(subprotocol: str) -> list[object]:
    """A value of every JSON / msgpack type, and the edges of each."""
    values: list[object] = [None, True, False, 0, -1, MAX_RID, 2**63, -(2**63), 1.5, -0.0, math.nan, math.inf]
    values += [-math.inf, "", " ", "x", "x" * 65, "x" * 300, "\x00", "\ud800", "\U0001f600", []]
    values += [[1, "a", None], {}, {"k": [1, {"k": None}]}, nested_list(50)]
    if subprotocol == JSON_SUBPROTOCOL:
        return [*values, 2**64, 10**30, -(10**30), 1e300]
    return [*values, 2**64 - 1, b"", b"\xff\x00", msgpack.ExtType(1, b"x"), msgpack.Timestamp(0, 1)]


def nested_list(depth: int) -> object:
    value: object = []
    for _ in range(depth):
        value = [value]
    return value


def mistyped_shots(world: World, subprotocol: str) -> list[Shot]:
    """Every field of every op, with every wrong value (and op and rid themselves)."""
    channel = next(c for c in world.channels if c.startswith("family:"))
    base: dict[str, dict[str, object]] = {
        "auth": {"token": world.token},
        "subscribe": {"channel": channel, "since": 0, "epoch": "0", "presence": False},
        "unsubscribe": {"channel": channel},
        "publish": {"channel": channel, "msg_id": "sweep-0001", "body": {"kind": "text", "text": "s"}, "children": []},
        "history": {"channel": channel, "before": 10, "limit": 5},
        "withdraw": {"channel": channel, "id": str(uuid.UUID(int=1))},
        "read": {"channel": channel, "seq": 1},
        "receipts": {"channel": channel},
        "typing": {"channel": channel},
        "presence": {"channel": channel},
    }
    frames: list[dict[str, object]] = []
    for value in wrong_values(subprotocol):
        frames.append({"op": value, "rid": len(frames)})
        for op, fields in base.items():
            frames.append({"op": op, "rid": value, **fields})
            for name in fields:
                frames.append({"op": op, "rid": len(frames), **fields, name: value})
        publish = base["publish"] | {"op": "publish", "rid": len(frames)}
        frames.append(publish | {"body": {"kind": value, "text": "s"}})
        frames.append(publish | {"body": {"kind": "text", "text": value}})
        frames.append(publish | {"children": [value]})
        # An unknown key beside str ones: a bin key on msgpack.
        extra: dict[object, object] = {"kind": "text", "text": "s", "a": value}
        extra[b"b" if subprotocol == MSGPACK_SUBPROTOCOL else "b"] = 1
        frames.append(publish | {"body": extra})
    out = []
    for frame in frames:
        with contextlib.suppress(Unencodable):
            out.append(shot(subprotocol, str(frame["op"])[:20], encode(subprotocol, frame)))
    return out


def padded(subprotocol: str, frame: dict[str, object], size: int) -> bytes | str:
    """`frame` with an unknown field filling it up to exactly `size` bytes."""
    bare = encode(subprotocol, frame | {"pad": ""})
    missing = size - len(bare)
    if subprotocol == JSON_SUBPROTOCOL:
        data: bytes | str = encode(subprotocol, frame | {"pad": "p" * missing})
    else:
        # The str header grows with the length: shrink the filling to match.
        data = encode(subprotocol, frame | {"pad": "p" * missing})
        data = encode(subprotocol, frame | {"pad": "p" * (missing - (len(data) - size))})
    assert len(data.encode() if isinstance(data, str) else data) == size
    return data


def containers(subprotocol: str, kind: str, over: bool) -> bytes | str:
    """A frame with an array of 4096 (4097) items or a map of 1024 (1025) entries: §3's
    msgpack bounds (JSON has none, the frame size bounds it)."""
    count = (4096 if kind == "array" else 1024) + over
    if kind == "array":
        value: object = [0] * count
    else:
        value = {f"k{i}": 0 for i in range(count)}
    return encode(subprotocol, {"op": "presence", "rid": 8, "channel": "family:1", "extra": value})


def examples(world: World, subprotocol: str) -> st.SearchStrategy[Example]:
    return st.builds(
        Example,
        fresh=st.integers(0, 5).map(lambda n: n == 0),
        shots=st.lists(shots(world, subprotocol), min_size=1, max_size=4).map(tuple),
    )


# Running examples against the gateway


class Violation(AssertionError):
    pass


@dataclass
class Tally:
    frames: int = 0
    replies: int = 0
    closes: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    crashes: int = 0
    unanswered: int = 0


AUTH_REFUSALS = {"invalid_token": 4403, "terms_not_accepted": 4406, "unavailable": 1013, "internal": 1013}


class Fuzzer:
    def __init__(self, gateway: Gateway, subprotocol: str, token: str) -> None:
        self.gateway = gateway
        self.subprotocol = subprotocol
        self.token = token
        self.main: ClientConnection | None = None
        self.tally = Tally()

    async def open(self, *, authenticated: bool) -> ClientConnection:
        ws = await connect(
            self.gateway.ws,
            subprotocols=[Subprotocol(self.subprotocol)],
            compression=None,
            max_size=None,
            open_timeout=REPLY_WAIT,
            ping_interval=None,
        )
        if authenticated:
            await ws.send(encode(self.subprotocol, {"op": "auth", "rid": "login", "token": self.token}))
            reply = await self.next_reply(ws)
            assert reply.get("ok") is True, reply
        return ws

    async def close(self) -> None:
        if self.main is not None:
            await self.main.close()
            self.main = None

    def decode(self, data: bytes | str) -> dict[str, Any]:
        if self.subprotocol == JSON_SUBPROTOCOL:
            if not isinstance(data, str):
                raise Violation("a binary frame on the JSON subprotocol")
            frame = json.loads(data)
        else:
            if not isinstance(data, bytes):
                raise Violation("a text frame on the msgpack subprotocol")
            frame = msgpack.unpackb(data, raw=False)
        if not isinstance(frame, dict) or not isinstance(frame.get("op"), str):
            raise Violation(f"a server frame that is not an object with an op: {frame!r}")
        return frame

    async def next_reply(self, ws: ClientConnection) -> dict[str, Any]:
        """The next reply, skipping pushes (message, presence, read… events)."""
        while True:
            try:
                data = await asyncio.wait_for(ws.recv(), REPLY_WAIT)
            except TimeoutError:
                self.tally.unanswered += 1
                raise Violation(f"no reply within {REPLY_WAIT} s, and the connection is still open") from None
            frame = self.decode(data)
            if frame["op"] == "reply":
                return frame

    async def run(self, example: Example) -> None:
        if example.fresh:
            ws = await self.open(authenticated=False)
        else:
            if self.main is None:
                self.main = await self.open(authenticated=True)
            ws = self.main
        try:
            await self.exchange(ws, example)
        except BaseException:
            # After a violation the connection's replies can no longer be told apart.
            if ws is self.main:
                self.main = None
            await ws.close()
            raise
        if ws is not self.main or ws.close_code is not None:
            if ws is self.main:
                self.main = None
            await ws.close()

    async def sweep(self, shots: list[Shot], *, fresh: bool) -> None:
        """Every shot, pipelined by 8: on the authenticated connection, or each pipeline on a
        new connection before auth (an `auth`, which may close it, alone)."""
        chunk: list[Shot] = []
        for item in shots:
            if fresh and item.label == "auth":
                await self.run(Example(True, (item,)))
                continue
            chunk.append(item)
            if len(chunk) == 8:
                await self.run(Example(fresh, tuple(chunk)))
                chunk = []
        if chunk:
            await self.run(Example(fresh, tuple(chunk)))

    async def exchange(self, ws: ClientConnection, example: Example) -> None:
        shots = example.shots
        sent = 0
        with contextlib.suppress(ConnectionClosed):
            for item in shots:
                await ws.send(item.data)
                sent += 1
        self.tally.frames += sent
        refused_auth: str | None = None
        answered = 0
        try:
            while answered < sent:
                reply = await self.next_reply(ws)
                self.check(reply, shots[answered])
                self.tally.replies += 1
                if not reply["ok"]:
                    self.tally.codes[reply["error"]["code"]] += 1
                    if example.fresh and shots[answered].label == "auth":
                        refused_auth = reply["error"]["code"]
                answered += 1
            if any(s.oversized for s in shots) or refused_auth in AUTH_REFUSALS or sent < len(shots):
                # The connection must end: wait for its close (pushes may come first).
                await self.next_reply(ws)
                raise Violation(f"a reply after all frames were answered ({[s.label for s in shots]})")
        except ConnectionClosed as closed:
            self.check_close(closed, shots[answered:], refused_auth, fresh=example.fresh)

    def check(self, reply: dict[str, Any], sent: Shot) -> None:
        where = f"frame {sent.label} {sent.data[:200]!r}…: reply {reply!r}"
        if set(reply) - {"op", "rid", "ok", "error"} and reply.get("ok") is not True:
            raise Violation(f"unexpected fields in an error reply to {where}")
        if sent.oversized:
            raise Violation(f"an oversized frame was answered: {where}")
        if sent.either_rid:
            if reply["rid"] not in (sent.rid, None):
                raise Violation(f"wrong rid for {where}")
        elif reply["rid"] != sent.rid or type(reply["rid"]) is not type(sent.rid):
            raise Violation(f"expected rid {sent.rid!r} for {where}")
        if reply["ok"] is True:
            if sent.code is not None or sent.rid is None:
                raise Violation(f"expected {sent.code} for {where}")
            return
        if reply["ok"] is not False or not isinstance(reply.get("error"), dict):
            raise Violation(f"a reply neither ok nor an error: {where}")
        code = reply["error"].get("code")
        if code not in ERROR_CODES:
            raise Violation(f"undocumented error code {code!r} (docs/protocol.md §8): {where}")
        if code == "internal":
            raise Violation(f"a server fault (internal): {where}")
        if not isinstance(reply["error"].get("message"), str):
            raise Violation(f"an error without a message: {where}")
        if sent.code is not None and code != sent.code and not sent.either_rid:
            raise Violation(f"expected {sent.code}: {where}")

    def check_close(
        self, closed: ConnectionClosed, unanswered: tuple[Shot, ...], refused: str | None, fresh: bool
    ) -> None:
        labels = [s.label for s in unanswered]
        if closed.rcvd is None:
            self.tally.crashes += 1
            raise Violation(f"the connection dropped without a close frame; frames not answered: {labels}")
        code = closed.rcvd.code
        self.tally.closes[code] += 1
        if code not in CLOSE_CODES:
            raise Violation(f"undocumented close code {code} (docs/protocol.md §9); frames not answered: {labels}")
        explained = (
            (code == 1009 and any(s.oversized for s in unanswered))
            or (refused is not None and AUTH_REFUSALS.get(refused) == code)
            or (code == 4401 and fresh)
        )
        if not explained:
            self.tally.unanswered += len(unanswered)
            raise Violation(f"closed with {code} for no reason the frames give; frames not answered: {labels}")


class ErrorLogs(logging.Handler):
    """Errors the gateway logs (an exception in a session, a request that failed)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def error_logs() -> Iterator[ErrorLogs]:
    handler = ErrorLogs()
    loggers = [logging.getLogger(name) for name in ("procreche", "uvicorn.error", "uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@contextlib.asynccontextmanager
async def bystander(gateway: Gateway, channel: str) -> AsyncIterator[Client]:
    """Another user, subscribed to `channel`, left to receive what comes."""
    async with Client.connect(gateway.ws, await gateway.login("martin@demo.test")) as client:
        await client.subscribe(channel)
        yield client


def run_in_thread(
    loop: asyncio.AbstractEventLoop, fuzzer: Fuzzer, strategy: st.SearchStrategy[Example]
) -> Callable[[], None]:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(example=strategy)
    def fuzz(example: Example) -> None:
        asyncio.run_coroutine_threadsafe(fuzzer.run(example), loop).result()

    return fuzz


# Replaying a failing example, hypothesis warns that its repr is large (the frames): under
# -W error that warning would replace the failure it is about to report.
@pytest.mark.filterwarnings("ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning")
@pytest.mark.parametrize("subprotocol", [JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL], ids=["json", "msgpack"])
async def test_fuzzed_frames_are_each_answered_or_closed_with_a_documented_code(
    gateway: Gateway, demo_families: dict[str, int], subprotocol: str
) -> None:
    household = f"family:{demo_families['Famille Martin']}"
    token = await gateway.login("staff@demo.test")
    me = await gateway.me(token)
    channels = tuple(sorted(c["channel"] for c in me["channels"]))
    children = tuple(sorted({int(c.split(":")[1]) for c in channels if c.startswith("child:")})) or (1,)
    world = World(token, channels, children)
    fuzzer = Fuzzer(gateway, subprotocol, token)
    marker = f"bystander marker {uuid.uuid4()}"
    with error_logs() as logs:
        async with bystander(gateway, household) as watcher, Client.connect(gateway.ws, token) as publisher:
            # Every field with every wrong value, and every nesting and raw frame, first
            # after auth, at the end before it; hypothesis's mixtures in between.
            swept = mistyped_shots(world, subprotocol) + deep_shots(world, subprotocol) + raw_shots(subprotocol)
            swept += [
                shot(subprotocol, "containers", containers(subprotocol, k, o))
                for k in ("array", "map")
                for o in (False, True)
            ]
            await fuzzer.sweep(swept, fresh=False)
            loop = asyncio.get_running_loop()
            fuzz = run_in_thread(loop, fuzzer, examples(world, subprotocol))
            half = asyncio.create_task(asyncio.to_thread(fuzz))
            # Published while the fuzzing runs: the bystander receives it all the same.

            async def under_way() -> bool:
                return half.done() or fuzzer.tally.frames >= EXAMPLES // 4

            await wait_for(under_way, timeout=60)
            published = await publisher.publish(household, marker)
            try:
                await half
                await fuzzer.sweep(swept, fresh=True)
            finally:
                await fuzzer.close()

            async def marker_received() -> bool:
                while not watcher.pushes.empty():
                    push = watcher.pushes.get_nowait()
                    if push.get("op") == "message" and push["id"] == published["id"]:
                        return True
                return False

            await wait_for(marker_received)
            assert (await watcher.request("presence", channel=household))["ok"] is True
            assert watcher.ws.close_code is None
        health = await gateway.http.get("/healthz")
    assert health.status_code == 200, health.text
    tally = fuzzer.tally
    side = "json" if subprotocol == JSON_SUBPROTOCOL else "msgpack"
    FRAMES[side] = tally.frames
    report(
        "Protocol fuzzing",
        frames=sum(FRAMES.values()),
        **{side: tally.frames},
        crashes=tally.crashes + len(logs.records),
        unanswered=tally.unanswered,
    )
    assert not logs.records, [r.getMessage() for r in logs.records]
    # Every kind of outcome was reached: the fuzzing did not just bounce off one check.
    assert tally.closes[1009] > 0
    assert {"bad_frame", "unknown_op", "bad_channel", "not_authenticated"} <= set(tally.codes), tally.codes
    assert tally.replies > tally.frames // 2


# WebSocket edge cases the gateway's protocol layer controls (raw sockets)

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
PROTOCOL_ERROR = 1002  # RFC 6455 (WebSocket layer), not in §9's table


async def authenticated_raw(
    gateway: Gateway, token: str, subprotocol: str = JSON_SUBPROTOCOL
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await open_raw(gateway.ws, subprotocol=subprotocol)
    opcode = TEXT if subprotocol == JSON_SUBPROTOCOL else BINARY
    writer.write(client_frame(opcode, wire(subprotocol, {"op": "auth", "rid": 1, "token": token})))
    reply = await raw_reply(reader, subprotocol)
    assert reply["ok"] is True, reply
    return reader, writer


def wire(subprotocol: str, frame: dict[str, object]) -> bytes:
    data = encode(subprotocol, frame)
    return data.encode() if isinstance(data, str) else data


async def raw_reply(reader: asyncio.StreamReader, subprotocol: str) -> dict[str, Any]:
    """The next reply (skipping pushes), decoded."""
    while True:
        _, opcode, payload = await asyncio.wait_for(read_frame(reader), REPLY_WAIT)
        assert opcode in (TEXT, BINARY), (opcode, payload)
        frame: dict[str, Any] = json.loads(payload) if opcode == TEXT else msgpack.unpackb(payload, raw=False)
        if frame["op"] == "reply":
            return frame


async def close_code(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int | None:
    try:
        _, code = await asyncio.wait_for(frames_until_close(reader), REPLY_WAIT)
    finally:
        writer.close()
    return code


async def no_session_left(gateway: Gateway) -> None:
    async def gone() -> bool:
        return not gateway.services.sessions.all()

    await wait_for(gone)


def split(data: bytes, *cuts: int) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("subprotocol", [JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL], ids=["json", "msgpack"])
async def test_a_fragmented_message_is_reassembled_and_a_ping_between_fragments_answered(
    gateway: Gateway, demo_families: dict[str, int], subprotocol: str
) -> None:
    token = await gateway.login("martin@demo.test")
    household = f"family:{demo_families['Famille Martin']}"
    reader, writer = await open_raw(gateway.ws, subprotocol=subprotocol)
    opcode = TEXT if subprotocol == JSON_SUBPROTOCOL else BINARY
    # The auth split in three, "é" cut in the middle of its UTF-8 bytes, a ping in between.
    data = wire(subprotocol, {"op": "auth", "rid": "a", "note": "é", "token": token})
    cut = data.index("é".encode()) + 1
    first, middle, last = split(data, cut, cut + 7)
    writer.write(client_frame(opcode, first, fin=False))
    writer.write(client_frame(PING, b"between"))
    writer.write(client_frame(CONT, middle, fin=False))
    writer.write(client_frame(CONT, last))
    assert await asyncio.wait_for(read_frame(reader), REPLY_WAIT) == (True, PONG, b"between")
    reply = await raw_reply(reader, subprotocol)
    assert (reply["rid"], reply["ok"]) == ("a", True), reply
    # Authenticated: one-byte fragments are a request like any other.
    data = wire(subprotocol, {"op": "subscribe", "rid": 2, "channel": household})
    writer.write(client_frame(opcode, data[:1], fin=False))
    writer.write(b"".join(client_frame(CONT, bytes((b,)), fin=False) for b in data[1:-1]))
    writer.write(client_frame(CONT, data[-1:]))
    reply = await raw_reply(reader, subprotocol)
    assert (reply["rid"], reply["ok"], reply["channel"]) == (2, True, household), reply
    writer.write(client_frame(CLOSE, struct.pack("!H", 1000)))
    assert await close_code(reader, writer) == 1000
    await no_session_left(gateway)


async def test_fragments_over_64_kib_together_close_with_1009(gateway: Gateway) -> None:
    token = await gateway.login("martin@demo.test")
    # Exactly 64 KiB in three fragments: answered (as an unknown op).
    reader, writer = await authenticated_raw(gateway, token)
    data = str(padded(JSON_SUBPROTOCOL, {"op": "stretch", "rid": 3}, MAX_MESSAGE)).encode()
    for i, part in enumerate(parts := split(data, 30_000, 60_000)):
        writer.write(client_frame(TEXT if i == 0 else CONT, part, fin=i == len(parts) - 1))
    reply = await raw_reply(reader, JSON_SUBPROTOCOL)
    assert (reply["rid"], reply["error"]["code"]) == (3, "unknown_op"), reply
    # One byte more, each fragment well under the limit: the connection is closed with 1009.
    data = str(padded(JSON_SUBPROTOCOL, {"op": "stretch", "rid": 4}, MAX_MESSAGE + 1)).encode()
    for i, part in enumerate(parts := split(data, 30_000, 60_000)):
        writer.write(client_frame(TEXT if i == 0 else CONT, part, fin=i == len(parts) - 1))
    assert await close_code(reader, writer) == 1009
    await no_session_left(gateway)


async def test_invalid_utf8_in_a_text_message_closes_with_1007(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    token = await gateway.login("martin@demo.test")
    for label, frames in {
        "one frame": [client_frame(TEXT, b'{"op": "auth", "rid": 1, "token": "\xc3\x28"}')],
        "an overlong encoding": [client_frame(TEXT, b'{"x": "\xc0\xaf"}')],
        "a surrogate in UTF-8": [client_frame(TEXT, b'{"x": "\xed\xa0\x80"}')],
        "cut at the end": [client_frame(TEXT, b'{"x": "\xe2\x82', fin=False), client_frame(CONT, b"")],
        "across fragments": [client_frame(TEXT, b'{"x": "\xe2', fin=False), client_frame(CONT, b'\x28"}')],
    }.items():
        reader, writer = await authenticated_raw(gateway, token)
        writer.write(b"".join(frames))
        assert await close_code(reader, writer) == 1007, label
    await no_session_left(gateway)
    # The client's fault: one line each, no error and no traceback a client could flood the logs with.
    said = [r for r in caplog.records if "UTF-8" in r.getMessage()]
    assert [(r.levelname, r.exc_info) for r in said] == [("INFO", None)] * 5


async def test_a_client_close_is_echoed_and_an_invalid_one_is_a_protocol_error(gateway: Gateway) -> None:
    token = await gateway.login("martin@demo.test")
    cases: list[tuple[bytes, int | None]] = [
        (struct.pack("!H", 1000), 1000),
        (struct.pack("!H", 1001) + b"going away", 1001),
        (struct.pack("!H", 3000), 3000),
        (struct.pack("!H", 4000), 4000),
        (struct.pack("!H", 4999), 4999),
        (b"", 1005),  # no code: the echo has none either
    ]
    cases += [(struct.pack("!H", code), PROTOCOL_ERROR) for code in (0, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65535)]
    cases += [(b"\x03", PROTOCOL_ERROR), (struct.pack("!H", 1000) + b"\xff\xfe", 1007)]
    for payload, expected in cases:
        reader, writer = await authenticated_raw(gateway, token)
        writer.write(client_frame(CLOSE, payload))
        assert await close_code(reader, writer) == expected, payload
    await no_session_left(gateway)


async def test_frames_breaking_rfc_6455_are_closed_with_1002(gateway: Gateway) -> None:
    token = await gateway.login("martin@demo.test")
    presence = b'{"op": "presence", "rid": 5, "channel": "family:1"}'
    cases = {
        "unmasked": [client_frame(TEXT, presence, masked=False)],
        "unmasked ping": [client_frame(PING, b"x", masked=False)],
        **{f"rsv {rsv}": [client_frame(TEXT, presence, rsv=rsv)] for rsv in range(1, 8)},
        **{f"opcode {op:#x}": [client_frame(op, b"")] for op in (0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF)},
        "continuation of nothing": [client_frame(CONT, presence)],
        "a new message inside a fragmented one": [
            client_frame(TEXT, presence[:10], fin=False),
            client_frame(TEXT, presence),
        ],
        "a fragmented ping": [client_frame(PING, b"x", fin=False)],
        "a control frame over 125 bytes": [client_frame(PING, b"x" * 126)],
    }
    for label, frames in cases.items():
        reader, writer = await authenticated_raw(gateway, token)
        writer.write(b"".join(frames))
        assert await close_code(reader, writer) == PROTOCOL_ERROR, label
    await no_session_left(gateway)
    assert (await gateway.http.get("/healthz")).status_code == 200
