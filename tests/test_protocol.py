"""The sans-I/O protocol: frames in, typed requests or RequestError out, encoded replies back.

Every test runs on both codecs: the client side encodes with the same codec and sends text
frames on JSON, binary frames on msgpack.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.channels import Channel, ChannelKind
from realtime.codec import Codec, JsonCodec, MsgpackCodec
from realtime.errors import BadRequest, Forbidden, ProcrecheError
from realtime.protocol import (
    MAX_SEQ,
    Auth,
    InvalidTransition,
    Publish,
    RequestError,
    Rid,
    ServerProtocol,
    State,
    Subscribe,
    Unsubscribe,
)

FAMILY = Channel(ChannelKind.FAMILY, 42)


@pytest.fixture(params=[JsonCodec(), MsgpackCodec()], ids=["json", "msgpack"])
def codec(request: pytest.FixtureRequest) -> Codec:
    value: Codec = request.param
    return value


def wire(codec: Codec, frame: object) -> bytes | str:
    """What a client sends: text frames on JSON, binary frames on msgpack."""
    data = codec.encode(frame)  # type: ignore[arg-type]  # frames that are not objects too
    return data if codec.binary else data.decode()


def state(protocol: ServerProtocol) -> State:
    """The state, read through a call so that mypy does not narrow it across transitions."""
    return protocol.state


def fresh(codec: Codec) -> ServerProtocol:
    return ServerProtocol(codec)


def opened(codec: Codec) -> ServerProtocol:
    protocol = ServerProtocol(codec)
    assert isinstance(protocol.receive(wire(codec, {"op": "auth", "rid": 0, "token": "secret"})), Auth)
    protocol.authenticated()
    return protocol


def refused(protocol: ServerProtocol, frame: object) -> RequestError:
    with pytest.raises(RequestError) as caught:
        protocol.receive(wire(protocol.codec, frame))
    assert isinstance(caught.value.error, BadRequest)
    assert str(caught.value) == caught.value.error.message
    assert caught.value.error.message
    return caught.value


def decoded(codec: Codec, data: bytes) -> object:
    return codec.decode(data if codec.binary else data.decode())


# The state machine


def test_a_new_connection_awaits_auth(codec: Codec) -> None:
    assert fresh(codec).state is State.AWAITING_AUTH


def test_auth_first(codec: Codec) -> None:
    protocol = fresh(codec)
    request = protocol.receive(wire(codec, {"op": "auth", "rid": 1, "token": "secret"}))
    assert request == Auth(1, "secret")
    assert state(protocol) is State.AWAITING_AUTH  # until the gateway has checked the token
    protocol.authenticated()
    assert state(protocol) is State.OPEN


@pytest.mark.parametrize(
    "frame",
    [
        {"op": "subscribe", "rid": 1, "channel": "family:42"},
        {"op": "unsubscribe", "rid": 1, "channel": "family:42"},
        {"op": "publish", "rid": 1, "channel": "family:42", "msg_id": "abcdefgh", "body": {}},
    ],
    ids=["subscribe", "unsubscribe", "publish"],
)
def test_other_ops_before_auth_are_refused(codec: Codec, frame: dict[str, Any]) -> None:
    protocol = fresh(codec)
    error = refused(protocol, frame)
    assert (error.rid, error.error.code) == (1, "not_authenticated")
    assert protocol.state is State.AWAITING_AUTH
    assert protocol.receive(wire(codec, {"op": "auth", "rid": 2, "token": "t"})) == Auth(2, "t")


def test_auth_after_auth_is_refused(codec: Codec) -> None:
    protocol = opened(codec)
    error = refused(protocol, {"op": "auth", "rid": "again", "token": "secret"})
    assert (error.rid, error.error.code) == ("again", "already_authenticated")
    assert protocol.state is State.OPEN


def test_refused_frames_leave_the_connection_usable(codec: Codec) -> None:
    protocol = opened(codec)
    refused(protocol, {"op": "nope", "rid": 1})
    refused(protocol, {"op": "subscribe", "rid": 2, "channel": "nope:1"})
    with pytest.raises(RequestError):
        protocol.receive("{" if not codec.binary else b"\xc1")
    assert protocol.receive(wire(codec, {"op": "subscribe", "rid": 3, "channel": "family:42"})) == Subscribe(
        3, FAMILY, None
    )


def test_authenticated_twice_is_an_invalid_transition(codec: Codec) -> None:
    protocol = opened(codec)
    with pytest.raises(InvalidTransition):
        protocol.authenticated()
    assert protocol.state is State.OPEN


@pytest.mark.parametrize("authenticated", [False, True])
def test_nothing_after_close(codec: Codec, authenticated: bool) -> None:
    protocol = opened(codec) if authenticated else fresh(codec)
    protocol.closed()
    assert protocol.state is State.CLOSED
    with pytest.raises(InvalidTransition):
        protocol.receive(wire(codec, {"op": "auth", "rid": 1, "token": "secret"}))
    with pytest.raises(InvalidTransition):
        protocol.authenticated()
    protocol.closed()  # closing twice is harmless
    assert protocol.state is State.CLOSED


# Frames that are not requests: no rid to answer to


def test_undecodable_frames_are_bad_frames_without_rid(codec: Codec) -> None:
    protocol = fresh(codec)
    for data in ("{", "", "[1,", "nope") if not codec.binary else (b"\xc1", b"", b"\x92\x01"):
        with pytest.raises(RequestError) as caught:
            protocol.receive(data)
        assert (caught.value.rid, caught.value.error.code) == (None, "bad_frame")


def test_wrong_frame_type_is_a_bad_frame(codec: Codec) -> None:
    protocol = fresh(codec)
    frame = {"op": "auth", "rid": 1, "token": "secret"}
    data = JsonCodec().encode(frame) if not codec.binary else MsgpackCodec().encode(frame).decode("latin-1")
    with pytest.raises(RequestError) as caught:
        protocol.receive(data)
    assert (caught.value.rid, caught.value.error.code) == (None, "bad_frame")


@pytest.mark.parametrize("frame", [[1, 2], ["op", "auth"], "auth", 42, None, True, 1.5])
def test_frames_that_are_not_objects_are_bad_frames(codec: Codec, frame: object) -> None:
    error = refused(fresh(codec), frame)
    assert (error.rid, error.error.code) == (None, "bad_frame")


@pytest.mark.parametrize(
    "rid",
    [None, True, False, -1, MAX_SEQ + 1, 2**64 - 1, 1.0, 1.5, "", "x" * 65, [1], {"id": 1}],
    ids=repr,
)
def test_invalid_rids_are_bad_frames_without_rid(codec: Codec, rid: object) -> None:
    error = refused(fresh(codec), {"op": "auth", "rid": rid, "token": "secret"})
    assert (error.rid, error.error.code) == (None, "bad_frame")


def test_missing_rid_is_a_bad_frame(codec: Codec) -> None:
    error = refused(fresh(codec), {"op": "auth", "token": "secret"})
    assert (error.rid, error.error.code) == (None, "bad_frame")


def test_bytes_rid_is_a_bad_frame_on_msgpack() -> None:
    error = refused(fresh(MsgpackCodec()), {"op": "auth", "rid": b"1", "token": "secret"})
    assert (error.rid, error.error.code) == (None, "bad_frame")


@pytest.mark.parametrize("rid", [0, 1, MAX_SEQ, "a", "x" * 64, "req-1", "é"], ids=repr)
def test_valid_rids(codec: Codec, rid: Rid) -> None:
    request = fresh(codec).receive(wire(codec, {"op": "auth", "rid": rid, "token": "secret"}))
    assert request == Auth(rid, "secret")
    assert type(request.rid) is type(rid)


# Requests that carry a rid: errors answer to it


@pytest.mark.parametrize("op", ["login", "AUTH", "", None, 1, ["auth"]], ids=repr)
def test_unknown_ops(codec: Codec, op: object) -> None:
    error = refused(opened(codec), {"op": op, "rid": 7})
    assert (error.rid, error.error.code) == (7, "unknown_op")


def test_missing_op(codec: Codec) -> None:
    error = refused(opened(codec), {"rid": "r"})
    assert (error.rid, error.error.code) == ("r", "unknown_op")


@pytest.mark.parametrize("token", ["x", "t" * 256])
def test_auth_token(codec: Codec, token: str) -> None:
    assert fresh(codec).receive(wire(codec, {"op": "auth", "rid": 1, "token": token})) == Auth(1, token)


@pytest.mark.parametrize("token", [None, "", "t" * 257, 42, ["secret"], {"t": 1}], ids=repr)
def test_bad_auth_token(codec: Codec, token: object) -> None:
    error = refused(fresh(codec), {"op": "auth", "rid": 1, "token": token})
    assert (error.rid, error.error.code) == (1, "bad_frame")


def test_auth_without_token(codec: Codec) -> None:
    error = refused(fresh(codec), {"op": "auth", "rid": 1})
    assert (error.rid, error.error.code) == (1, "bad_frame")


def test_subscribe(codec: Codec) -> None:
    protocol = opened(codec)
    assert protocol.receive(wire(codec, {"op": "subscribe", "rid": 1, "channel": "family:42"})) == Subscribe(
        1, FAMILY, None
    )
    assert protocol.receive(
        wire(codec, {"op": "subscribe", "rid": 2, "channel": "child:7", "since": None})
    ) == Subscribe(2, Channel(ChannelKind.CHILD, 7), None)


@pytest.mark.parametrize("since", [0, 1, 12345, MAX_SEQ])
def test_subscribe_since(codec: Codec, since: int) -> None:
    request = opened(codec).receive(wire(codec, {"op": "subscribe", "rid": 1, "channel": "family:42", "since": since}))
    assert request == Subscribe(1, FAMILY, since)


@pytest.mark.parametrize("since", [-1, MAX_SEQ + 1, True, False, 1.0, 1.5, "3", [3], {}], ids=repr)
def test_subscribe_since_out_of_bounds(codec: Codec, since: object) -> None:
    error = refused(opened(codec), {"op": "subscribe", "rid": 1, "channel": "family:42", "since": since})
    assert (error.rid, error.error.code) == (1, "bad_frame")


BAD_CHANNELS = [
    None,
    42,
    "",
    "family",
    "family:",
    "family:0",
    "family:01",
    "family:-1",
    "family:²",
    "pets:1",
    f"family:{2**63}",
    "family:" + "1" * 60,
    ["family:42"],
]


@pytest.mark.parametrize("channel", BAD_CHANNELS, ids=repr)
@pytest.mark.parametrize("op", ["subscribe", "unsubscribe", "publish"])
def test_bad_channels(codec: Codec, op: str, channel: object) -> None:
    frame = {"op": op, "rid": "c", "channel": channel, "msg_id": "abcdefgh", "body": {}}
    error = refused(opened(codec), frame)
    assert (error.rid, error.error.code) == ("c", "bad_channel")


@pytest.mark.parametrize("op", ["subscribe", "unsubscribe", "publish"])
def test_missing_channel(codec: Codec, op: str) -> None:
    error = refused(opened(codec), {"op": op, "rid": 3, "msg_id": "abcdefgh", "body": {}})
    assert (error.rid, error.error.code) == (3, "bad_channel")


def test_unsubscribe(codec: Codec) -> None:
    request = opened(codec).receive(wire(codec, {"op": "unsubscribe", "rid": 4, "channel": "group:3"}))
    assert request == Unsubscribe(4, Channel(ChannelKind.GROUP, 3))


def test_publish(codec: Codec) -> None:
    body = {"kind": "text", "text": "Bonjour 👋"}
    frame = {"op": "publish", "rid": 5, "channel": "family:42", "msg_id": "0123-abc_XYZ", "body": body}
    assert opened(codec).receive(wire(codec, frame)) == Publish(5, FAMILY, "0123-abc_XYZ", body)


def test_publish_passes_any_body_on_for_validation(codec: Codec) -> None:
    # The body is validated later (realtime.messages.validate_body), not by the protocol.
    protocol = opened(codec)
    frame: dict[str, Any] = {"op": "publish", "rid": 1, "channel": "family:42", "msg_id": "abcdefgh"}
    request = protocol.receive(wire(codec, frame))
    assert isinstance(request, Publish)
    assert request.body is None
    request = protocol.receive(wire(codec, {**frame, "body": [1, "two"]}))
    assert isinstance(request, Publish)
    assert request.body == [1, "two"]


@pytest.mark.parametrize("msg_id", ["abcdefgh", "A" * 64, "0123456789", "a_b-c_d-", "--------"])
def test_publish_msg_ids(codec: Codec, msg_id: str) -> None:
    frame = {"op": "publish", "rid": 1, "channel": "family:42", "msg_id": msg_id, "body": {}}
    request = opened(codec).receive(wire(codec, frame))
    assert isinstance(request, Publish)
    assert request.msg_id == msg_id


@pytest.mark.parametrize(
    "msg_id",
    [
        None,
        "",
        "abcdefg",
        "A" * 65,
        "abcd efgh",
        "abcdefgh!",
        "abcdéfgh",
        "abcdefgh\n",
        "abc/defgh",
        "ａｂｃｄｅｆｇｈ",
        12345678,
        ["abcdefgh"],
    ],
    ids=repr,
)
def test_publish_bad_msg_ids(codec: Codec, msg_id: object) -> None:
    frame = {"op": "publish", "rid": 1, "channel": "family:42", "msg_id": msg_id, "body": {}}
    error = refused(opened(codec), frame)
    assert (error.rid, error.error.code) == (1, "bad_frame")


def test_publish_without_msg_id(codec: Codec) -> None:
    error = refused(opened(codec), {"op": "publish", "rid": 1, "channel": "family:42", "body": {}})
    assert (error.rid, error.error.code) == (1, "bad_frame")


def test_extra_fields_are_ignored(codec: Codec) -> None:
    frame = {"op": "unsubscribe", "rid": 1, "channel": "family:42", "since": "not checked here", "x": [1]}
    assert opened(codec).receive(wire(codec, frame)) == Unsubscribe(1, FAMILY)


# What the server sends


def test_reply_encoding(codec: Codec) -> None:
    protocol = opened(codec)
    data = protocol.reply(9, user={"id": 1, "name": "Zoé"}, last_seq=3)
    assert isinstance(data, bytes)
    assert decoded(codec, data) == {
        "op": "reply",
        "rid": 9,
        "ok": True,
        "user": {"id": 1, "name": "Zoé"},
        "last_seq": 3,
    }
    assert decoded(codec, protocol.reply("r")) == {"op": "reply", "rid": "r", "ok": True}


@pytest.mark.parametrize(
    "error",
    [
        BadRequest("'since' must be a non-negative integer", code="bad_frame"),
        Forbidden("you may not use this channel"),
        ProcrecheError("internal error; retry later"),
    ],
)
def test_error_encoding(codec: Codec, error: ProcrecheError) -> None:
    data = fresh(codec).error("r1", error)
    assert decoded(codec, data) == {
        "op": "reply",
        "rid": "r1",
        "ok": False,
        "error": {"code": error.code, "message": error.message},
    }


def test_error_without_rid(codec: Codec) -> None:
    data = fresh(codec).error(None, BadRequest("frame is not valid JSON", code="bad_frame"))
    assert decoded(codec, data) == {
        "op": "reply",
        "rid": None,
        "ok": False,
        "error": {"code": "bad_frame", "message": "frame is not valid JSON"},
    }


def test_error_of_a_refused_request_answers_its_rid(codec: Codec) -> None:
    protocol = opened(codec)
    caught = refused(protocol, {"op": "subscribe", "rid": 77, "channel": "nope:1"})
    assert decoded(codec, protocol.error(caught.rid, caught.error)) == {
        "op": "reply",
        "rid": 77,
        "ok": False,
        "error": {"code": "bad_channel", "message": caught.error.message},
    }


def test_push_encoding(codec: Codec) -> None:
    frame = {"op": "message", "channel": "family:42", "seq": 1, "body": {"kind": "text", "text": "é"}}
    data = opened(codec).push(frame)
    assert data == codec.encode(frame)
    assert decoded(codec, data) == frame


@given(rid=st.integers(min_value=0, max_value=MAX_SEQ) | st.text(min_size=1, max_size=64))
def test_every_accepted_rid_is_echoed(rid: Rid) -> None:
    for codec in (JsonCodec(), MsgpackCodec()):
        protocol = ServerProtocol(codec)
        request = protocol.receive(wire(codec, {"op": "auth", "rid": rid, "token": "secret"}))
        assert request.rid == rid
        assert decoded(codec, protocol.reply(request.rid)) == {"op": "reply", "rid": rid, "ok": True}
        error = decoded(codec, protocol.error(request.rid, BadRequest("no")))
        assert isinstance(error, dict)
        assert error["rid"] == rid


def test_a_rid_with_a_lone_surrogate_is_refused_with_no_rid() -> None:
    protocol = ServerProtocol(JsonCodec())
    with pytest.raises(RequestError) as refused:
        protocol.receive('{"op":"auth","rid":"\\ud800","token":"secret"}')
    assert (refused.value.rid, refused.value.error.code) == (None, "bad_frame")
    assert isinstance(decoded(JsonCodec(), protocol.error(refused.value.rid, refused.value.error)), dict)
