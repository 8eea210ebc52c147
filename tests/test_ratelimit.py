"""The token bucket behind the per-connection rate limit."""

from __future__ import annotations

from realtime.ratelimit import TokenBucket


def test_a_burst_passes_then_the_rate_applies() -> None:
    bucket = TokenBucket(rate=2, burst=3, now=0)
    assert [bucket.take(0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.4) is False  # 0.8 token
    assert bucket.take(0.5) is True  # 1.0 token
    assert bucket.take(0.5) is False


def test_tokens_never_exceed_the_burst() -> None:
    bucket = TokenBucket(rate=100, burst=2, now=0)
    assert [bucket.take(1000) for _ in range(3)] == [True, True, False]


def test_a_steady_client_within_the_rate_is_never_refused() -> None:
    bucket = TokenBucket(rate=10, burst=1, now=0)
    assert all(bucket.take(i * 0.1) for i in range(1, 100))
