"""Wire codecs: frames round-trip in both encodings; anything else is refused as bad_frame."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.codec import (
    CODECS,
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    Codec,
    JsonCodec,
    MsgpackCodec,
    choose,
)
from realtime.errors import BadRequest

BOTH: list[Codec] = [JsonCodec(), MsgpackCodec()]

# JSON-compatible values that both encodings carry exactly: msgpack integers are 64-bit,
# and JSON has no NaN or infinity.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
frames = st.dictionaries(st.text(max_size=20), values, max_size=10)


def same(a: object, b: object) -> bool:
    """Equal, and of the same types all the way down (True == 1 and 1 == 1.0 in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def wire(codec: Codec, frame: dict[str, Any]) -> bytes | str:
    """What a client sends: text frames on JSON, binary frames on msgpack."""
    data = codec.encode(frame)
    return data if codec.binary else data.decode()


@given(frame=frames)
def test_json_round_trip(frame: dict[str, Any]) -> None:
    codec = JsonCodec()
    decoded = codec.decode(wire(codec, frame))
    assert same(decoded, frame)


@given(frame=frames)
def test_msgpack_round_trip(frame: dict[str, Any]) -> None:
    codec = MsgpackCodec()
    decoded = codec.decode(wire(codec, frame))
    assert same(decoded, frame)


@given(frame=frames)
def test_encodings_are_deterministic(frame: dict[str, Any]) -> None:
    for codec in BOTH:
        assert codec.encode(frame) == codec.encode(frame)


def test_json_is_compact_utf8() -> None:
    assert JsonCodec().encode({"op": "reply", "text": "é👶"}) == '{"op":"reply","text":"é👶"}'.encode()


def test_msgpack_is_plain_msgpack() -> None:
    frame = {"op": "reply", "rid": 1, "text": "é"}
    data = MsgpackCodec().encode(frame)
    assert msgpack.unpackb(data) == frame


def test_codec_flags_and_subprotocols() -> None:
    assert (JsonCodec.subprotocol, JsonCodec.binary) == (JSON_SUBPROTOCOL, False)
    assert (MsgpackCodec.subprotocol, MsgpackCodec.binary) == (MSGPACK_SUBPROTOCOL, True)
    assert set(CODECS) == {"procreche.v1.json", "procreche.v1.msgpack"}
    assert all(name == codec.subprotocol for name, codec in CODECS.items())


def test_json_refuses_binary_frames() -> None:
    with pytest.raises(BadRequest) as refused:
        JsonCodec().decode(b'{"op":"auth"}')
    assert refused.value.code == "bad_frame"


def test_msgpack_refuses_text_frames() -> None:
    text = MsgpackCodec().encode({"op": "auth"}).decode("latin-1")
    with pytest.raises(BadRequest) as refused:
        MsgpackCodec().decode(text)
    assert refused.value.code == "bad_frame"


@pytest.mark.parametrize(
    "data",
    ["", " ", "{", "}", '{"op":', "{'op': 'auth'}", '{"op":"auth",}', "[1,]", "undefined", '{"a":1}x', "\x00"],
)
def test_json_refuses_invalid_data(data: str) -> None:
    with pytest.raises(BadRequest) as refused:
        JsonCodec().decode(data)
    assert refused.value.code == "bad_frame"


def test_json_refuses_deep_nesting_as_bad_frame() -> None:
    # Well within the 64 KiB frame limit.
    with pytest.raises(BadRequest) as refused:
        JsonCodec().decode("[" * 50_000)
    assert refused.value.code == "bad_frame"


def test_json_refuses_lone_surrogates_and_keeps_escaped_pairs() -> None:
    codec = JsonCodec()
    with pytest.raises(BadRequest) as refused:
        codec.decode('{"op":"auth","rid":"\\ud800","token":"t"}')
    assert refused.value.code == "bad_frame"
    decoded = codec.decode('{"op":"auth","rid":"\\ud83d\\ude00","token":"t"}')
    assert isinstance(decoded, dict)
    assert decoded["rid"] == "😀"
    assert codec.decode(codec.encode(decoded).decode()) == decoded


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used
        b"\x92\x01",  # truncated array
        b"\x01\x02",  # extra data
        b"\xa1\xff",  # invalid UTF-8 string
        b"\x81\x01\x02",  # integer map key
        b"\x81\xc0\x01",  # nil map key
        b"\xdc\x13\x88" + b"\x00" * 5000,  # array of 5000 > 4096
        b"\xde\x04\x01" + b"".join(msgpack.packb(f"k{i}") + b"\x00" for i in range(1025)),  # map of 1025
        b"\x91" * 50_000,  # deep nesting
    ],
)
def test_msgpack_refuses_invalid_data(data: bytes) -> None:
    with pytest.raises(BadRequest) as refused:
        MsgpackCodec().decode(data)
    assert refused.value.code == "bad_frame"


def test_msgpack_container_limits_are_inclusive() -> None:
    codec = MsgpackCodec()
    assert codec.decode(msgpack.packb({"a": [0] * 4096})) == {"a": [0] * 4096}
    big = {f"k{i}": i for i in range(1024)}
    assert codec.decode(msgpack.packb(big)) == big


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        (["procreche.v1.json", "procreche.v1.msgpack"], "procreche.v1.json"),
        (["procreche.v1.msgpack", "procreche.v1.json"], "procreche.v1.msgpack"),
        (["chat", "procreche.v1.msgpack"], "procreche.v1.msgpack"),
        (["procreche.v2.json", "procreche.v1.json", "chat"], "procreche.v1.json"),
        (["procreche.v1.msgpack"], "procreche.v1.msgpack"),
    ],
)
def test_choose_honours_the_clients_order(offered: list[str], expected: str) -> None:
    codec = choose(offered)
    assert codec is not None
    assert codec.subprotocol == expected
    assert isinstance(codec, JsonCodec if expected == JSON_SUBPROTOCOL else MsgpackCodec)


@pytest.mark.parametrize("offered", [[], ["chat"], ["PROCRECHE.V1.JSON"], ["procreche.v1"], ["json", "msgpack"]])
def test_choose_returns_none_for_unknown(offered: list[str]) -> None:
    assert choose(offered) is None
