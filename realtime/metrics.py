"""This process's metrics, in Prometheus's text exposition format (version 0.0.4).

Hot paths (the hub's fan-out, the live feed, the publish path, the workers' batches) only
add to plain ints and to `Histogram`s, on the event loop's thread: no lock, no object per
event. The numbers become metric families at scrape time, when `Metrics.render` asks each
registered `Source` for them; a source that must ask a server first (the persistence
worker's ingest streams, the media queue) does so in `refresh`, bounded by a timeout.

Why not the `prometheus_client` package: its metric objects take a lock at every increment
and live in a global registry (several gateways run in one test process), its process
collector lists /proc/self/fd at every scrape (one entry per WebSocket: thousands, on the
event loop), and its HTTP server is a thread. What would be left of it is the text format
of counters, gauges and histograms, which is the few lines below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from realtime.errors import client_error

log = logging.getLogger("procreche.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A source that has not refreshed within this long is reported without its sampled values.
REFRESH_TIMEOUT = 2.0
# Publish → delivery: a publish script and a pub/sub hop take well under a millisecond on a
# healthy deployment; seconds mean a stalled loop or a backed-up Redis.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)

Kind = Literal["counter", "gauge", "histogram"]
Labels = tuple[tuple[str, str], ...]

_STARTED = time.time()


class Histogram:
    """Counts of observations per bucket (upper bounds inclusive, as Prometheus's `le`) and
    their sum; one bisect and two additions per observation."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class Family:
    """One metric: its name (a counter's ends with `_total`), help text, type, and samples
    (suffix, labels, value)."""

    name: str
    help: str
    kind: Kind
    samples: tuple[tuple[str, Labels, float], ...]


def _labels(key: Labels | str | None, label: str | None) -> Labels:
    if key is None:
        return ()
    if isinstance(key, str):
        assert label is not None, "a labelled sample needs the label's name"
        return ((label, key),)
    return key


def counter(name: str, help: str, values: float | Mapping[str, float], label: str | None = None) -> Family:
    """A counter; `values` is one number, or numbers by the value of `label`."""
    return _simple(name, help, "counter", values, label)


def gauge(name: str, help: str, values: float | Mapping[str, float], label: str | None = None) -> Family:
    return _simple(name, help, "gauge", values, label)


def _simple(name: str, help: str, kind: Kind, values: float | Mapping[str, float], label: str | None) -> Family:
    if isinstance(values, Mapping):
        samples = tuple(("", _labels(key, label), value) for key, value in values.items())
    else:
        samples = (("", (), values),)
    return Family(name, help, kind, samples)


def histogram(name: str, help: str, hist: Histogram, labels: Labels = ()) -> Family:
    samples: list[tuple[str, Labels, float]] = []
    cumulative = 0
    for bound, count in zip((*hist.bounds, math.inf), hist.counts, strict=True):
        cumulative += count
        samples.append(("_bucket", (*labels, ("le", _number(bound))), cumulative))
    samples.append(("_sum", labels, hist.sum))
    samples.append(("_count", labels, cumulative))
    return Family(name, help, "histogram", tuple(samples))


class Source:
    """Something that reports metrics (a gateway, a worker). `name` labels its refresh failures."""

    name = "source"

    async def refresh(self) -> None:
        """Read from a server what `families` reports; bounded by the caller's timeout.
        Nothing by default: most sources only read their own counters."""

    def families(self) -> Iterable[Family]:
        raise NotImplementedError


@dataclass(eq=False)
class Metrics:
    """The metrics of one process: every source registered in it, on one /metrics."""

    refresh_timeout: float = REFRESH_TIMEOUT
    _sources: dict[int, Source] = field(default_factory=dict)
    _next: int = 0
    _refresh_failures: dict[str, int] = field(default_factory=dict)

    def add(self, source: Source) -> Callable[[], None]:
        """Register a source; returns the function that removes it."""
        key = self._next
        self._next += 1
        self._sources[key] = source
        self._refresh_failures.setdefault(source.name, 0)

        def remove() -> None:
            self._sources.pop(key, None)

        return remove

    async def render(self) -> bytes:
        """The exposition of every source, each refreshed first within `refresh_timeout`."""
        sources = list(self._sources.values())
        await asyncio.gather(*(self._refresh(s) for s in sources))
        families: list[Family] = [*process_families(), *self._own_families()]
        for source in sources:
            families.extend(source.families())
        return exposition(families).encode()

    async def _refresh(self, source: Source) -> None:
        try:
            await asyncio.wait_for(source.refresh(), self.refresh_timeout)
        except Exception as exc:  # a server down or slow: report the rest, count the failure
            self._refresh_failures[source.name] = self._refresh_failures.get(source.name, 0) + 1
            log.warning("metrics: %s could not be read: %r", source.name, exc)

    def _own_families(self) -> Iterable[Family]:
        yield counter(
            "procreche_metrics_refresh_failures_total",
            "Scrapes for which a source could not read its servers in time; its sampled metrics were left out.",
            dict(self._refresh_failures),
            label="source",
        )


def process_families() -> Iterable[Family]:
    yield counter(
        "process_cpu_seconds_total", "CPU time (user and system) of this process, in seconds.", time.process_time()
    )
    yield gauge("process_start_time_seconds", "When this process started, in seconds since the epoch.", _STARTED)
    rss = _resident_bytes()
    if rss is not None:
        yield gauge("process_resident_memory_bytes", "Resident memory of this process, in bytes.", rss)


def _resident_bytes() -> int | None:
    # /proc is answered from kernel memory: no disk behind this read.
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return None


def exposition(families: Iterable[Family]) -> str:
    """Families in the text format; families of one name (from several sources) are merged."""
    merged: dict[str, Family] = {}
    for family in families:
        known = merged.get(family.name)
        if known is None:
            merged[family.name] = family
        elif known.kind == family.kind:
            merged[family.name] = Family(known.name, known.help, known.kind, known.samples + family.samples)
        else:
            raise ValueError(f"metric {family.name} reported as both {known.kind} and {family.kind}")
    lines: list[str] = []
    for family in merged.values():
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for suffix, labels, value in family.samples:
            lines.append(f"{family.name}{suffix}{_format_labels(labels)} {_number(value)}")
    return "\n".join(lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape_label(value)}"' for name, value in labels) + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass(slots=True)
class GatewayCounts:
    """What the gateway counts where it happens (plain ints: the event loop's thread only)."""

    # WebSocket sessions after the handshake, authenticated or not yet.
    connections: int = 0
    publishes: dict[str, int] = field(default_factory=lambda: {"ok": 0, "refused": 0, "failed": 0})

    def published(self) -> None:
        self.publishes["ok"] += 1

    def publish_failed(self, exc: BaseException) -> None:
        """`refused`: the client's request was not allowed or not valid (its error code says
        why); `failed`: ours — PostgreSQL or Redis unavailable, or a bug."""
        code = client_error(exc).code
        self.publishes["failed" if code in ("unavailable", "internal") else "refused"] += 1
