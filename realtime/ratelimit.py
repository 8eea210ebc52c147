"""A token bucket: `burst` requests at once, refilled at `rate` per second. Pure: the
caller passes the clock."""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        # The epsilon forgives float rounding: a client exactly at the rate must pass.
        if self._tokens < 1 - 1e-9:
            return False
        self._tokens -= 1
        return True
