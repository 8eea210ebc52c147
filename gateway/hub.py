"""The local hub: which connections of this process follow which channel. No I/O.

`deliver` hands the same pre-built frame bytes to every live subscriber with no task,
future or await per delivery; a subscriber whose write buffer passes the bound is closed
(it will resume from its last sequence), so a slow reader never delays the others.
While a subscriber catches up on its backlog, live messages wait in its bounded
`pending` list; `go_live` replays them past what the backlog already covered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.frames import ws_frame
from realtime.codec import Codec
from realtime.errors import CloseCode
from realtime.messages import Message

MAX_PENDING = 10_000
ALL, STAFF, PRESENCE = "all", "staff", "presence"
AUDIENCES = {"a": ALL, "s": STAFF, "p": PRESENCE}


class Sink(Protocol):
    def write(self, frame: bytes) -> None: ...

    def buffered(self) -> int: ...

    def close(self, code: int, reason: str = "") -> None: ...


class Outgoing:
    """A frame on its way out to a channel's subscribers, encoded at most once per wire
    format. A message has a `seq`; an event (a withdrawal) has none and is never skipped."""

    __slots__ = ("_body", "_frames", "audience", "children", "seq")

    def __init__(
        self, body: dict[str, Any], seq: int | None = None, children: tuple[int, ...] = (), audience: str = ALL
    ) -> None:
        self._body = body
        self.seq = seq
        self.children = children
        # Who receives it: everyone (ALL), the channel's staff (read positions in a group),
        # or the subscribers who asked for presence events (PRESENCE).
        self.audience = audience
        self._frames: dict[str, bytes] = {}

    @classmethod
    def of(cls, message: Message) -> Outgoing:
        return cls(message.frame(), message.seq, message.concerns)

    @classmethod
    def withdrawal(cls, channel: str, message_id: str) -> Outgoing:
        return cls({"op": "withdrawn", "channel": channel, "id": message_id})

    @classmethod
    def event(cls, body: dict[str, Any], audience: str) -> Outgoing:
        """A transient event (read position, typing, presence): never stored, no seq."""
        return cls(body, audience=audience)

    def frame(self, codec: Codec) -> bytes:
        frame = self._frames.get(codec.subprotocol)
        if frame is None:
            frame = ws_frame(codec.encode(self._body), binary=codec.binary)
            self._frames[codec.subprotocol] = frame
        return frame


@dataclass(eq=False, slots=True)
class Subscriber:
    sink: Sink
    codec: Codec
    channel: str
    last_seq: int = 0
    pending: list[Outgoing] | None = field(default_factory=list)
    # Children whose content this viewer must not receive (theirs, without consultation).
    hidden: frozenset[int] = frozenset()
    staff: bool = False
    presence: bool = False  # asked for presence events at subscribe

    def sees(self, out: Outgoing) -> bool:
        if out.audience is not ALL and not (self.staff if out.audience is STAFF else self.presence):
            return False
        return not (self.hidden and out.children and not self.hidden.isdisjoint(out.children))


class Hub:
    def __init__(self, outbound_limit: int) -> None:
        self.outbound_limit = outbound_limit
        self._channels: dict[str, set[Subscriber]] = {}
        # For /metrics: frames written by `deliver` and `go_live`, subscribers closed as slow.
        self.delivered = 0
        self.slow_closed = 0

    def add(self, sub: Subscriber) -> bool:
        """Register a subscriber (catching up). True if it is the channel's first here."""
        subs = self._channels.get(sub.channel)
        if subs is None:
            self._channels[sub.channel] = {sub}
            return True
        subs.add(sub)
        return False

    def remove(self, sub: Subscriber) -> bool:
        """True if the channel has no subscriber left here."""
        subs = self._channels.get(sub.channel)
        if subs is None:
            return False
        subs.discard(sub)
        if subs:
            return False
        del self._channels[sub.channel]
        return True

    def subscriber_count(self, channel: str) -> int:
        return len(self._channels.get(channel, ()))

    def subscriptions(self) -> int:
        return sum(len(subs) for subs in self._channels.values())

    def channels(self) -> int:
        return len(self._channels)

    def deliver(self, channel: str, out: Outgoing) -> int:
        """Write `out` to the channel's live subscribers; the number of frames written."""
        subs = self._channels.get(channel)
        if not subs:
            return 0
        slow: list[Subscriber] = []
        seq = out.seq
        limit = self.outbound_limit
        # Counted on the rare paths only (catching up, duplicate, hidden), so that the common
        # one, a write, costs nothing more than it did.
        skipped = 0
        for sub in subs:
            pending = sub.pending
            if pending is not None:
                if len(pending) >= MAX_PENDING:
                    slow.append(sub)
                else:
                    pending.append(out)
                skipped += 1
                continue
            if seq is not None:
                if seq <= sub.last_seq:
                    skipped += 1
                    continue
                sub.last_seq = seq
            if not sub.sees(out):
                skipped += 1
                continue
            sink = sub.sink
            sink.write(out.frame(sub.codec))
            if sink.buffered() > limit:
                slow.append(sub)
        written = len(subs) - skipped
        self.delivered += written
        self.slow_closed += len(slow)
        for sub in slow:
            sub.sink.close(CloseCode.SLOW_CONSUMER, "slow consumer: resume from your last seq")
        return written

    def renumbered(self, channel: str) -> int:
        """The channel's numbering was repaired under a new epoch (realtime.keys.RENUMBER):
        the seqs its subscribers hold mean nothing now. Close their connections, so that
        they resume, learn the new epoch and reload; the number closed."""
        subs = list(self._channels.get(channel, ()))
        for sub in subs:
            sub.sink.close(CloseCode.LIVE_PATH_LOST, "channel renumbered: resume")
        return len(subs)

    def go_live(self, sub: Subscriber, last_seq: int) -> None:
        """The backlog up to `last_seq` was written: replay what came since, then go live."""
        sub.last_seq = last_seq
        pending, sub.pending = sub.pending or [], None
        written = 0
        for out in pending:
            if out.seq is not None:
                if out.seq <= sub.last_seq:
                    continue
                sub.last_seq = out.seq
            if sub.sees(out):
                sub.sink.write(out.frame(sub.codec))
                written += 1
        self.delivered += written
