"""UUIDv7 message ids (RFC 9562): version and variant bits, time ordering."""

from __future__ import annotations

import time
import uuid

import pytest

from realtime.ids import uuid7


def test_version_and_variant_bits() -> None:
    for _ in range(200):
        value = uuid7()
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert (value.int >> 76) & 0xF == 0x7
        assert (value.int >> 62) & 0b11 == 0b10


@pytest.mark.parametrize("now_ms", [0, 1, 1_700_000_000_123, 2**48 - 1])
def test_the_timestamp_is_the_top_48_bits(now_ms: int) -> None:
    value = uuid7(now_ms)
    assert value.int >> 80 == now_ms
    assert value.version == 7
    assert value.variant == uuid.RFC_4122


def test_default_timestamp_is_the_current_time() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= value.int >> 80 <= after


def test_ids_are_ordered_across_milliseconds() -> None:
    ids = [uuid7(now_ms) for now_ms in range(1_700_000_000_000, 1_700_000_000_200) for _ in range(3)]
    # Within one millisecond the order is random; across milliseconds it is the time order.
    for earlier, later in zip(ids, ids[3:], strict=False):
        assert earlier < later
        assert str(earlier) < str(later)
        assert earlier.bytes < later.bytes


def test_random_bits_differ_within_one_millisecond() -> None:
    ids = {uuid7(1_700_000_000_000) for _ in range(1000)}
    assert len(ids) == 1000
