"""The local hub: fan-out of pre-built frames, catch-up buffering, slow consumers."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.frames import ws_frame
from gateway.hub import MAX_PENDING, Hub, Outgoing, Subscriber
from realtime.codec import Codec, JsonCodec, MsgpackCodec
from realtime.errors import CloseCode
from realtime.messages import Author, Message

CHANNEL = "family:42"
LIMIT = 1000


class FakeSink:
    """Records what the hub writes and closes; `size` is what buffered() reports."""

    def __init__(self, size: int = 0) -> None:
        self.frames: list[bytes] = []
        self.closes: list[tuple[int, str]] = []
        self.size = size

    def write(self, frame: bytes) -> None:
        self.frames.append(frame)

    def buffered(self) -> int:
        return self.size

    def close(self, code: int, reason: str = "") -> None:
        self.closes.append((code, reason))


class CountingCodec:
    """A codec that counts its encodes."""

    def __init__(self, inner: Codec) -> None:
        self.inner = inner
        self.subprotocol = inner.subprotocol
        self.binary = inner.binary
        self.encodes = 0

    def encode(self, frame: dict[str, Any]) -> bytes:
        self.encodes += 1
        return self.inner.encode(frame)

    def decode(self, data: bytes | str) -> object:
        return self.inner.decode(data)


def message(seq: int, channel: str = CHANNEL) -> Message:
    return Message(
        id=f"m{seq}",
        channel=channel,
        seq=seq,
        author=Author(7, "Camille"),
        body={"kind": "text", "text": f"message {seq}"},
        at=datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC),
        msg_id=f"client-{seq:08d}",
    )


def out(seq: int, channel: str = CHANNEL) -> Outgoing:
    return Outgoing.of(message(seq, channel))


def expected(seq: int, codec: Codec) -> bytes:
    return ws_frame(codec.encode(message(seq).frame()), binary=codec.binary)


def live(hub: Hub, codec: Codec | None = None, *, channel: str = CHANNEL, last_seq: int = 0) -> Subscriber:
    """A subscriber added and already live (its backlog ended at `last_seq`)."""
    sub = Subscriber(FakeSink(), codec or JsonCodec(), channel)
    hub.add(sub)
    hub.go_live(sub, last_seq)
    return sub


def written(sub: Subscriber) -> list[bytes]:
    assert isinstance(sub.sink, FakeSink)
    return sub.sink.frames


def closes(sub: Subscriber) -> list[tuple[int, str]]:
    assert isinstance(sub.sink, FakeSink)
    return sub.sink.closes


def test_delivers_identical_bytes_to_every_live_subscriber() -> None:
    hub = Hub(LIMIT)
    subs = [live(hub) for _ in range(5)]
    hub.deliver(CHANNEL, out(1))
    for sub in subs:
        assert written(sub) == [expected(1, JsonCodec())]
    assert all(written(sub)[0] is written(subs[0])[0] for sub in subs)
    assert all(sub.last_seq == 1 for sub in subs)


def test_each_subscriber_gets_its_own_wire_format() -> None:
    hub = Hub(LIMIT)
    text, binary = live(hub, JsonCodec()), live(hub, MsgpackCodec())
    hub.deliver(CHANNEL, out(1))
    assert written(text) == [expected(1, JsonCodec())]
    assert written(binary) == [expected(1, MsgpackCodec())]
    assert written(text)[0][0] == 0x81
    assert written(binary)[0][0] == 0x82


def test_frames_are_built_once_per_codec() -> None:
    hub = Hub(LIMIT)
    json_codec, msgpack_codec = CountingCodec(JsonCodec()), CountingCodec(MsgpackCodec())
    subs = [live(hub, json_codec) for _ in range(10)] + [live(hub, msgpack_codec) for _ in range(10)]
    outgoing = out(1)
    hub.deliver(CHANNEL, outgoing)
    assert (json_codec.encodes, msgpack_codec.encodes) == (1, 1)
    assert all(len(written(sub)) == 1 for sub in subs)
    # The same Outgoing reuses its frames wherever it goes next (another channel's subscribers).
    other = live(hub, json_codec, channel="child:1")
    hub.deliver("child:1", outgoing)
    assert json_codec.encodes == 1
    assert written(other) == written(subs[0])


def test_deliver_to_a_channel_without_subscribers_builds_no_frame() -> None:
    hub = Hub(LIMIT)
    codec = CountingCodec(JsonCodec())
    sub = live(hub, codec)
    hub.deliver("family:43", out(1, "family:43"))
    assert written(sub) == []
    assert codec.encodes == 0


def test_deliver_after_the_last_subscriber_left() -> None:
    hub = Hub(LIMIT)
    codec = CountingCodec(JsonCodec())
    sub = live(hub, codec)
    hub.remove(sub)
    hub.deliver(CHANNEL, out(1))
    assert written(sub) == []
    assert codec.encodes == 0


def test_other_channels_are_not_delivered() -> None:
    hub = Hub(LIMIT)
    here, there = live(hub), live(hub, channel="family:43")
    hub.deliver(CHANNEL, out(1))
    assert len(written(here)) == 1
    assert written(there) == []


def test_catching_up_subscribers_buffer_into_pending() -> None:
    hub = Hub(LIMIT)
    sub = Subscriber(FakeSink(), JsonCodec(), CHANNEL)
    hub.add(sub)
    first, second = out(1), out(2)
    hub.deliver(CHANNEL, first)
    hub.deliver(CHANNEL, second)
    assert written(sub) == []
    assert sub.pending == [first, second]


def test_go_live_replays_only_what_the_backlog_did_not_cover_in_order() -> None:
    hub = Hub(LIMIT)
    sub = Subscriber(FakeSink(), JsonCodec(), CHANNEL)
    hub.add(sub)
    for seq in (3, 4, 5, 6):
        hub.deliver(CHANNEL, out(seq))
    hub.go_live(sub, last_seq=4)  # the backlog read from the store ended at 4
    assert written(sub) == [expected(5, JsonCodec()), expected(6, JsonCodec())]
    assert sub.pending is None
    assert sub.last_seq == 6
    hub.deliver(CHANNEL, out(7))
    assert written(sub)[-1] == expected(7, JsonCodec())
    assert sub.last_seq == 7


def test_go_live_skips_duplicates_and_out_of_order_entries_in_pending() -> None:
    hub = Hub(LIMIT)
    sub = Subscriber(FakeSink(), JsonCodec(), CHANNEL)
    hub.add(sub)
    for seq in (2, 3, 3, 1, 4):
        hub.deliver(CHANNEL, out(seq))
    hub.go_live(sub, last_seq=2)
    assert written(sub) == [expected(3, JsonCodec()), expected(4, JsonCodec())]


def test_go_live_with_nothing_pending() -> None:
    hub = Hub(LIMIT)
    sub = Subscriber(FakeSink(), JsonCodec(), CHANNEL)
    hub.add(sub)
    hub.go_live(sub, last_seq=9)
    assert written(sub) == []
    assert (sub.pending, sub.last_seq) == (None, 9)
    hub.deliver(CHANNEL, out(9))
    hub.deliver(CHANNEL, out(10))
    assert written(sub) == [expected(10, JsonCodec())]


def test_live_subscribers_drop_what_they_already_have() -> None:
    hub = Hub(LIMIT)
    sub = live(hub, last_seq=5)
    for seq in (4, 5, 6, 6, 5, 7):
        hub.deliver(CHANNEL, out(seq))
    assert written(sub) == [expected(6, JsonCodec()), expected(7, JsonCodec())]
    assert sub.last_seq == 7


def test_slow_consumer_is_closed_and_the_others_still_get_the_message() -> None:
    hub = Hub(LIMIT)
    fast_before, slow, fast_after = live(hub), live(hub), live(hub)
    assert isinstance(slow.sink, FakeSink)
    slow.sink.size = LIMIT + 1
    hub.deliver(CHANNEL, out(1))
    assert closes(slow) == [(CloseCode.SLOW_CONSUMER, closes(slow)[0][1])]
    assert closes(slow)[0][0] == 4001
    assert "slow" in closes(slow)[0][1]
    assert written(slow) == [expected(1, JsonCodec())]  # written, then closed when over the bound
    for fast in (fast_before, fast_after):
        assert written(fast) == [expected(1, JsonCodec())]
        assert closes(fast) == []


def test_buffer_at_the_limit_is_not_slow() -> None:
    hub = Hub(LIMIT)
    sub = live(hub)
    assert isinstance(sub.sink, FakeSink)
    sub.sink.size = LIMIT
    hub.deliver(CHANNEL, out(1))
    assert closes(sub) == []


def test_pending_overflow_closes_the_subscriber() -> None:
    hub = Hub(LIMIT)
    catching_up = Subscriber(FakeSink(), JsonCodec(), CHANNEL)
    hub.add(catching_up)
    other = live(hub)
    for seq in range(1, MAX_PENDING + 1):
        hub.deliver(CHANNEL, out(seq))
    assert catching_up.pending is not None
    assert len(catching_up.pending) == MAX_PENDING
    assert closes(catching_up) == []
    hub.deliver(CHANNEL, out(MAX_PENDING + 1))
    assert [code for code, _ in closes(catching_up)] == [CloseCode.SLOW_CONSUMER]
    assert len(catching_up.pending) == MAX_PENDING  # bounded: the overflow was not kept
    assert len(written(other)) == MAX_PENDING + 1
    assert closes(other) == []


def test_a_renumbered_channel_closes_its_subscribers_so_that_they_resume() -> None:
    hub = Hub(LIMIT)
    following = [live(hub, last_seq=40), live(hub, MsgpackCodec())]
    catching_up = Subscriber(FakeSink(), JsonCodec(), CHANNEL)
    hub.add(catching_up)
    elsewhere = live(hub, channel="family:43")
    assert hub.renumbered(CHANNEL) == 3
    for sub in [*following, catching_up]:
        assert closes(sub) == [(CloseCode.LIVE_PATH_LOST, "channel renumbered: resume")]
    assert closes(elsewhere) == []
    assert hub.renumbered("family:44") == 0


def test_add_and_remove_report_first_and_last_subscriber() -> None:
    hub = Hub(LIMIT)
    a = Subscriber(FakeSink(), JsonCodec(), CHANNEL)
    b = Subscriber(FakeSink(), JsonCodec(), CHANNEL)
    elsewhere = Subscriber(FakeSink(), JsonCodec(), "family:43")
    assert hub.add(a) is True
    assert hub.add(b) is False
    assert hub.add(elsewhere) is True
    assert hub.subscriber_count(CHANNEL) == 2
    assert hub.remove(a) is False
    assert hub.subscriber_count(CHANNEL) == 1
    assert hub.remove(b) is True
    assert hub.subscriber_count(CHANNEL) == 0
    assert hub.subscriber_count("family:43") == 1
    assert hub.remove(b) is False  # already gone
    assert hub.add(a) is True  # first again


def test_remove_of_a_subscriber_never_added() -> None:
    hub = Hub(LIMIT)
    added = Subscriber(FakeSink(), JsonCodec(), CHANNEL)
    hub.add(added)
    assert hub.remove(Subscriber(FakeSink(), JsonCodec(), "family:99")) is False
    assert hub.remove(Subscriber(FakeSink(), JsonCodec(), CHANNEL)) is False
    assert hub.subscriber_count(CHANNEL) == 1


def test_subscribers_are_distinct_even_when_equal_fields() -> None:
    hub = Hub(LIMIT)
    sink, codec = FakeSink(), JsonCodec()
    a, b = Subscriber(sink, codec, CHANNEL), Subscriber(sink, codec, CHANNEL)
    hub.add(a)
    hub.add(b)
    assert hub.subscriber_count(CHANNEL) == 2


def test_removed_subscribers_get_nothing() -> None:
    hub = Hub(LIMIT)
    stays, leaves = live(hub), live(hub)
    hub.remove(leaves)
    hub.deliver(CHANNEL, out(1))
    assert len(written(stays)) == 1
    assert written(leaves) == []


@pytest.mark.parametrize("codec", [JsonCodec(), MsgpackCodec()], ids=["json", "msgpack"])
def test_outgoing_frame_decodes_to_the_message_frame(codec: Codec) -> None:
    data = out(5).frame(codec)
    header = 2 if len(data) - 2 < 126 else 4
    assert codec.decode(data[header:] if codec.binary else data[header:].decode()) == message(5).frame()


def tagged(seq: int, *children: int) -> Outgoing:
    return Outgoing.of(dataclasses.replace(message(seq), children=children))


@pytest.mark.rule("V3", "V4")
def test_a_viewer_does_not_receive_content_of_a_child_hidden_from_them() -> None:
    hub = Hub(LIMIT)
    guardian = Subscriber(FakeSink(), JsonCodec(), CHANNEL, hidden=frozenset({5}))
    staff = Subscriber(FakeSink(), JsonCodec(), CHANNEL)
    for sub in (guardian, staff):
        hub.add(sub)
        hub.go_live(sub, 0)
    for item in (tagged(1, 5), tagged(2, 6), tagged(3, 5, 6), tagged(4)):
        hub.deliver(CHANNEL, item)
    assert written(guardian) == [tagged(2, 6).frame(JsonCodec()), tagged(4).frame(JsonCodec())]
    assert len(written(staff)) == 4
    # A hidden message still moves the viewer's position: a later replay cannot resend it.
    assert guardian.last_seq == 4


@pytest.mark.rule("V3")
def test_hidden_content_stays_hidden_when_replayed_after_catching_up() -> None:
    hub = Hub(LIMIT)
    guardian = Subscriber(FakeSink(), JsonCodec(), CHANNEL, hidden=frozenset({5}))
    hub.add(guardian)
    hub.deliver(CHANNEL, tagged(1, 5))
    hub.deliver(CHANNEL, tagged(2))
    hub.go_live(guardian, 0)
    assert written(guardian) == [tagged(2).frame(JsonCodec())]


@pytest.mark.rule("V2")
def test_a_withdrawal_reaches_every_subscriber_even_while_catching_up() -> None:
    hub = Hub(LIMIT)
    already = live(hub, last_seq=10)
    catching_up = Subscriber(FakeSink(), MsgpackCodec(), CHANNEL)
    hub.add(catching_up)
    withdrawal = Outgoing.withdrawal(CHANNEL, "m-1")
    hub.deliver(CHANNEL, withdrawal)
    assert written(already) == [withdrawal.frame(JsonCodec())]
    assert json.loads(written(already)[0][2:]) == {"op": "withdrawn", "channel": CHANNEL, "id": "m-1"}
    assert written(catching_up) == []
    hub.go_live(catching_up, 10)
    assert written(catching_up) == [withdrawal.frame(MsgpackCodec())]
