"""The WebSocket protocol, sans I/O: frames in, typed requests and encoded frames out.

The gateway pumps bytes around it: it feeds each received WebSocket message to
`ServerProtocol.receive`, acts on the request it gets back (the I/O: token lookups,
permission facts, Redis), and writes what `reply`, `error` and `push` return.
The connection's state lives here and every transition is checked.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from realtime.channels import Channel
from realtime.codec import Codec
from realtime.errors import BadRequest, ProcrecheError

Rid = int | str
MSG_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
MAX_SEQ = 2**63 - 1
MAX_TAGS = 50
HISTORY_PAGE = 50
MAX_HISTORY_PAGE = 100
MAX_FRAME = 64 * 1024  # bytes; a larger WebSocket message is closed with 1009


class State(enum.Enum):
    AWAITING_AUTH = "awaiting_auth"
    OPEN = "open"
    CLOSED = "closed"


class InvalidTransition(RuntimeError):
    """The gateway asked the protocol for a transition its state does not allow (a bug)."""


@dataclass(frozen=True, slots=True)
class Auth:
    rid: Rid
    token: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    rid: Rid
    channel: Channel
    since: int | None
    # The epoch `since` was counted in: if the channel's epoch changed, `since` means nothing.
    epoch: str | None = None
    # Receive presence events (who comes and goes) on this channel.
    presence: bool = False


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    rid: Rid
    channel: Channel


@dataclass(frozen=True, slots=True)
class Publish:
    rid: Rid
    channel: Channel
    msg_id: str
    body: object
    children: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class History:
    """Page back through a channel: the `limit` messages before seq `before`."""

    rid: Rid
    channel: Channel
    before: int
    limit: int


@dataclass(frozen=True, slots=True)
class Withdraw:
    rid: Rid
    channel: Channel
    id: str


@dataclass(frozen=True, slots=True)
class Read:
    """The user has read the channel up to `seq`."""

    rid: Rid
    channel: Channel
    seq: int


@dataclass(frozen=True, slots=True)
class Receipts:
    rid: Rid
    channel: Channel


@dataclass(frozen=True, slots=True)
class Typing:
    rid: Rid
    channel: Channel


@dataclass(frozen=True, slots=True)
class Presence:
    rid: Rid
    channel: Channel


Request = Auth | Subscribe | Unsubscribe | Publish | History | Withdraw | Read | Receipts | Typing | Presence


class RequestError(Exception):
    """A frame that cannot be acted on; `frame` is the error reply to send back."""

    def __init__(self, rid: Rid | None, error: ProcrecheError) -> None:
        super().__init__(error.message)
        self.rid = rid
        self.error = error


def _rid(frame: dict[str, Any]) -> Rid:
    rid = frame.get("rid")
    if isinstance(rid, bool) or not (
        (isinstance(rid, int) and 0 <= rid <= MAX_SEQ) or (isinstance(rid, str) and 0 < len(rid) <= 64)
    ):
        raise BadRequest("requests need 'rid': a non-negative integer or a short string", code="bad_frame")
    return rid


def _string(frame: dict[str, Any], name: str, limit: int) -> str:
    value = frame.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise BadRequest(f"'{name}' must be a non-empty string of at most {limit} characters", code="bad_frame")
    return value


def _children(frame: dict[str, Any]) -> tuple[int, ...]:
    """The children a message identifies (tags): each id once, at most MAX_TAGS."""
    children = frame.get("children", [])
    if (
        not isinstance(children, list)
        or len(children) > MAX_TAGS
        or not all(isinstance(c, int) and not isinstance(c, bool) and 0 < c <= MAX_SEQ for c in children)
        or len(set(children)) != len(children)
    ):
        raise BadRequest(f"'children' must be a list of at most {MAX_TAGS} distinct child ids", code="bad_frame")
    return tuple(children)


def _parse(frame: dict[str, Any], rid: Rid) -> Request:
    op = frame.get("op")
    if op == "auth":
        return Auth(rid, _string(frame, "token", 256))
    if op == "subscribe":
        since = frame.get("since")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= MAX_SEQ):
            raise BadRequest("'since' must be a non-negative integer", code="bad_frame")
        epoch = frame.get("epoch")
        if epoch is not None and (not isinstance(epoch, str) or len(epoch) > 64):
            raise BadRequest("'epoch' must be a string of at most 64 characters", code="bad_frame")
        presence = frame.get("presence", False)
        if not isinstance(presence, bool):
            raise BadRequest("'presence' must be true or false", code="bad_frame")
        return Subscribe(rid, Channel.parse(frame.get("channel")), since, epoch, presence)
    if op == "unsubscribe":
        return Unsubscribe(rid, Channel.parse(frame.get("channel")))
    if op == "history":
        before = frame.get("before")
        limit = frame.get("limit", HISTORY_PAGE)
        if isinstance(before, bool) or not isinstance(before, int) or not 1 <= before <= MAX_SEQ:
            raise BadRequest("'before' must be a positive integer (a seq)", code="bad_frame")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_HISTORY_PAGE:
            raise BadRequest(f"'limit' must be an integer from 1 to {MAX_HISTORY_PAGE}", code="bad_frame")
        return History(rid, Channel.parse(frame.get("channel")), before, limit)
    if op == "read":
        seq = frame.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= MAX_SEQ:
            raise BadRequest("'seq' must be a positive integer", code="bad_frame")
        return Read(rid, Channel.parse(frame.get("channel")), seq)
    if op == "receipts":
        return Receipts(rid, Channel.parse(frame.get("channel")))
    if op == "typing":
        return Typing(rid, Channel.parse(frame.get("channel")))
    if op == "presence":
        return Presence(rid, Channel.parse(frame.get("channel")))
    if op == "withdraw":
        return Withdraw(rid, Channel.parse(frame.get("channel")), _string(frame, "id", 64))
    if op == "publish":
        msg_id = frame.get("msg_id")
        if not isinstance(msg_id, str) or not MSG_ID.fullmatch(msg_id):
            raise BadRequest("'msg_id' must be 8 to 64 characters of A-Z a-z 0-9 _ -", code="bad_frame")
        return Publish(rid, Channel.parse(frame.get("channel")), msg_id, frame.get("body"), _children(frame))
    # Only a string op is echoed (shortened): the repr of a deeply nested value would
    # overflow the stack, and a long one would bloat the reply.
    raise BadRequest(
        f"unknown op {op[:64]!r}" if isinstance(op, str) else f"unknown op: 'op' is a {type(op).__name__}",
        code="unknown_op",
    )


class ServerProtocol:
    """One connection's protocol state and codec."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.state = State.AWAITING_AUTH

    def receive(self, data: bytes | str) -> Request:
        if self.state is State.CLOSED:
            raise InvalidTransition("receive after close")
        try:
            frame = self.codec.decode(data)
        except BadRequest as exc:
            raise RequestError(None, exc) from None
        if not isinstance(frame, dict):
            raise RequestError(None, BadRequest("a frame must be an object with 'op'", code="bad_frame"))
        try:
            rid = _rid(frame)
        except BadRequest as exc:
            raise RequestError(None, exc) from None
        try:
            request = _parse(frame, rid)
        except BadRequest as exc:
            raise RequestError(rid, exc) from None
        if self.state is State.AWAITING_AUTH and not isinstance(request, Auth):
            raise RequestError(rid, BadRequest("send 'auth' first", code="not_authenticated"))
        if self.state is State.OPEN and isinstance(request, Auth):
            raise RequestError(rid, BadRequest("already authenticated", code="already_authenticated"))
        return request

    def authenticated(self) -> None:
        if self.state is not State.AWAITING_AUTH:
            raise InvalidTransition(f"authenticated in state {self.state.value}")
        self.state = State.OPEN

    def closed(self) -> None:
        self.state = State.CLOSED

    def reply(self, rid: Rid, **fields: Any) -> bytes:
        return self.codec.encode({"op": "reply", "rid": rid, "ok": True, **fields})

    def error(self, rid: Rid | None, error: ProcrecheError) -> bytes:
        return self.codec.encode({"op": "reply", "rid": rid, "ok": False, "error": error.body()})

    def push(self, frame: dict[str, Any]) -> bytes:
        return self.codec.encode(frame)
