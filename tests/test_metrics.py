"""/metrics on real servers: the gateway's counters move with a publish and its delivery, the
persistence worker reports its ingest backlog and pending entries, the media worker its
queue and jobs; `procreche serve` shows gateway and workers on one /metrics, and
`procreche worker` serves it on PROCRECHE_METRICS_PORT. The text is checked against the
exposition format line by line."""

from __future__ import annotations

import asyncio
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from realtime.channels import Channel
from realtime.client import Client, ReplyError
from realtime.keys import CONSUMER_GROUP, Keys
from realtime.metrics import CONTENT_TYPE, Family, Histogram, Metrics, Source, counter, gauge, histogram
from realtime.settings import Settings, SettingsError
from tests.conftest import Gateway, running, wait_for
from tests.media_samples import jpeg_with_metadata, png_bomb
from tests.processes import cli_process, free_port, gateway_process, procreche_env, terminate
from tests.test_media_api import upload
from workers.media import MediaWorker
from workers.metrics import MediaSource, PersistenceSource
from workers.persistence import PersistenceWorker

ROOT = Path(__file__).resolve().parent.parent

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(?:,|$)')
_SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}

LabelSet = frozenset[tuple[str, str]]


@dataclass
class Scrape:
    """A /metrics text, checked against the format as it is parsed."""

    types: dict[str, str] = field(default_factory=dict)
    samples: dict[tuple[str, LabelSet], float] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def labels_of(self, name: str, label: str) -> set[str]:
        return {dict(labels)[label] for n, labels in self.samples if n == name and label in dict(labels)}


def parse(text: str) -> Scrape:
    assert text.endswith("\n")
    scrape = Scrape()
    helped: set[str] = set()
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert re.fullmatch(_NAME, name), line
            assert help_text, line
            assert name not in helped, f"{name} described twice"
            helped.add(name)
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name in helped, line
            assert name not in scrape.types, line
            assert kind in _SUFFIXES, line
            current = name
            scrape.types[name] = kind
            continue
        match = _SAMPLE.match(line)
        assert match is not None, f"not a sample line: {line!r}"
        sample_name, raw_labels, raw_value = match.groups()
        assert current is not None, line
        suffixes = _SUFFIXES[scrape.types[current]]
        assert any(sample_name == current + suffix for suffix in suffixes), f"{sample_name} outside {current}"
        labels: list[tuple[str, str]] = []
        if raw_labels:
            consumed = "".join(m.group(0) for m in _LABEL.finditer(raw_labels))
            assert consumed == raw_labels, f"bad labels in {line!r}"
            labels = [(m.group(1), _unescape(m.group(2))) for m in _LABEL.finditer(raw_labels)]
        value = float(raw_value)  # Prometheus's +Inf and NaN are Python's too
        key = (sample_name, frozenset(labels))
        assert key not in scrape.samples, f"duplicate sample {line!r}"
        scrape.samples[key] = value
    for name, kind in scrape.types.items():
        if kind == "histogram":
            _check_histograms(scrape, name)
    return scrape


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _check_histograms(scrape: Scrape, name: str) -> None:
    series: dict[LabelSet, list[tuple[float, float]]] = {}
    for (sample, labels), value in scrape.samples.items():
        if sample == f"{name}_bucket":
            le = dict(labels)["le"]
            series.setdefault(frozenset(kv for kv in labels if kv[0] != "le"), []).append((float(le), value))
    assert series, f"{name} has no buckets"
    for labels, buckets in series.items():
        buckets.sort()
        counts = [count for _, count in buckets]
        assert counts == sorted(counts), f"{name} buckets are not cumulative"
        assert math.isinf(buckets[-1][0]), f"{name} lacks +Inf"
        assert scrape.samples[(f"{name}_count", labels)] == counts[-1]
        assert (f"{name}_sum", labels) in scrape.samples


async def scrape(http: httpx.AsyncClient, path: str = "/metrics") -> Scrape:
    response = await http.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE
    return parse(response.text)


async def render(metrics: Metrics) -> Scrape:
    return parse((await metrics.render()).decode())


class Toy(Source):
    name = "toy"

    def __init__(self, tag: str, hist: Histogram, refresh: Callable[[], Awaitable[None]] | None = None) -> None:
        self.tag = tag
        self.hist = hist
        self._refresh = refresh

    async def refresh(self) -> None:
        if self._refresh is not None:
            await self._refresh()

    def families(self) -> Iterable[Family]:
        yield counter("toy_events_total", "Events.\nSecond line \\ backslash.", {self.tag: 3}, label="kind")
        yield gauge("toy_level", "A level.", {self.tag: 0.25}, label="kind")
        yield histogram("toy_seconds", "Durations.", self.hist, labels=(("kind", self.tag),))


async def test_the_exposition_follows_the_text_format() -> None:
    hist = Histogram([0.1, 1.0])
    for value in (0.05, 0.1, 0.5, 7.0):
        hist.observe(value)
    metrics = Metrics()
    odd = 'a"b\\c\nd'
    metrics.add(Toy("plain", hist))
    metrics.add(Toy(odd, Histogram([1.0])))  # the same families from a second source: merged
    text = (await metrics.render()).decode()
    assert text.count("# TYPE toy_seconds histogram") == 1
    assert "# HELP toy_events_total Events.\\nSecond line \\\\ backslash." in text
    assert 'toy_events_total{kind="a\\"b\\\\c\\nd"} 3' in text
    shown = parse(text)
    assert shown.value("toy_events_total", kind=odd) == 3
    assert shown.types["toy_seconds"] == "histogram"
    assert shown.value("toy_seconds_bucket", kind="plain", le="0.1") == 2  # an upper bound is inclusive
    assert shown.value("toy_seconds_bucket", kind="plain", le="1.0") == 3
    assert shown.value("toy_seconds_bucket", kind="plain", le="+Inf") == 4
    assert shown.value("toy_seconds_sum", kind="plain") == pytest.approx(7.65)
    assert shown.value("toy_seconds_count", kind=odd) == 0
    assert shown.value("process_cpu_seconds_total") > 0
    assert shown.types["process_resident_memory_bytes"] == "gauge"


async def test_a_source_that_cannot_read_its_server_is_left_out_and_counted() -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    async def fails() -> None:
        raise ConnectionError("Redis is down")

    metrics = Metrics(refresh_timeout=0.05)
    metrics.add(Toy("hangs", Histogram([1.0]), hangs))
    first = await render(metrics)
    assert first.value("procreche_metrics_refresh_failures_total", source="toy") == 1
    metrics.add(Toy("fails", Histogram([1.0]), fails))
    second = await render(metrics)
    assert second.value("procreche_metrics_refresh_failures_total", source="toy") == 3


def test_metrics_and_log_settings_are_checked() -> None:
    assert Settings.from_env({}).metrics_port is None
    assert Settings.from_env({}).metrics_host == "127.0.0.1"
    chosen = Settings.from_env({"PROCRECHE_METRICS_PORT": "9100", "PROCRECHE_METRICS_HOST": "0.0.0.0"})
    assert (chosen.metrics_port, chosen.metrics_host) == (9100, "0.0.0.0")
    for bad in ("http", "-1", "70000"):
        with pytest.raises(SettingsError, match="PROCRECHE_METRICS_PORT"):
            Settings.from_env({"PROCRECHE_METRICS_PORT": bad})


def test_nginx_never_serves_metrics_from_outside() -> None:
    directives = re.sub(r"#[^\n]*", "", (ROOT / "deploy" / "nginx.conf").read_text())
    block = re.search(r"location \^~ /metrics \{[^}]*\}", directives)
    assert block is not None
    assert "deny all;" in block.group()


@pytest.mark.usefixtures("demo_families")
async def test_a_publish_and_its_delivery_move_the_gateway_counters(
    gateway: Gateway, demo_families: dict[str, int]
) -> None:
    household = f"family:{demo_families['Famille Martin']}"
    before = await scrape(gateway.http)
    assert before.value("procreche_connections") == 0
    async with (
        Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff,
        Client.connect(gateway.ws, await gateway.login("martin@demo.test")) as parent,
        Client.connect(gateway.ws, await gateway.login("bernard@demo.test")) as stranger,
    ):
        await parent.subscribe(household)
        ack = await staff.publish(household, "Léa a fait la sieste.")
        assert (await parent.next_push())["seq"] == ack["seq"]
        with pytest.raises(ReplyError):
            await stranger.publish(household, "intrusion")
        after = await scrape(gateway.http)
        assert after.value("procreche_connections") == 3
        assert after.value("procreche_authenticated_connections") == 3
        assert after.value("procreche_subscriptions") == 1
        assert after.value("procreche_live_channels") == 1
    assert (
        after.value("procreche_publishes_total", outcome="ok")
        == before.value("procreche_publishes_total", outcome="ok") + 1
    )
    assert (
        after.value("procreche_publishes_total", outcome="refused")
        == before.value("procreche_publishes_total", outcome="refused") + 1
    )
    assert after.value("procreche_publishes_total", outcome="failed") == 0
    assert after.value("procreche_deliveries_total") >= before.value("procreche_deliveries_total") + 1
    # One observation per message and gateway: the message reached this gateway's subscriber.
    assert after.value("procreche_delivery_latency_seconds_count") >= 1
    assert after.value("procreche_delivery_latency_seconds_sum") >= 0
    assert after.value("procreche_draining") == 0

    async def all_closed() -> bool:
        now = await scrape(gateway.http)
        return now.value("procreche_connections") == 0 and now.value("procreche_subscriptions") == 0

    await wait_for(all_closed)


@pytest.mark.usefixtures("demo_families")
async def test_the_persistence_worker_reports_its_ingest_backlog_pending_entries_and_batches(
    gateway: Gateway, demo_families: dict[str, int], settings: Settings, redis: Redis, pool: asyncpg.Pool
) -> None:
    household = Channel.parse(f"family:{demo_families['Famille Martin']}")
    keys = Keys(settings.redis_prefix, settings.partitions)
    partition = str(household.partition(settings.partitions))
    async with Client.connect(gateway.ws, await gateway.login("staff@demo.test")) as staff:
        for n in range(3):
            await staff.publish(household.name, f"message {n}")
    worker = PersistenceWorker.configured(settings, redis, pool)
    metrics = Metrics()
    metrics.add(PersistenceSource(worker))

    backlog = await render(metrics)
    assert backlog.labels_of("procreche_ingest_lag_entries", "partition") == {str(p) for p in range(8)}
    assert backlog.value("procreche_ingest_lag_entries", partition=partition) == 3
    assert backlog.value("procreche_ingest_lag_seconds", partition=partition) >= 0
    assert backlog.value("procreche_ingest_pending_entries", partition=partition) == 0
    assert backlog.value("procreche_ingest_dead_letters", partition=partition) == 0

    # A worker that read the entries and died before acknowledging them.
    await worker.ensure_groups()
    await redis.xreadgroup(CONSUMER_GROUP, "a-dead-worker", {keys.ingest(int(partition)): ">"}, count=10)

    async def pending(expected: int) -> bool:
        now = await render(metrics)
        return now.get("procreche_ingest_pending_entries", partition=partition) == expected

    await wait_for(lambda: pending(3))
    async with running(worker):  # it reclaims them (reclaim_idle_ms is 500 in the tests)

        async def persisted() -> Scrape | None:
            now = await render(metrics)
            done = now.get("procreche_ingest_lag_entries", partition=partition) == 0
            return now if done and now.value("procreche_persisted_messages_total") == 3 else None

        done = await wait_for(persisted)
    assert done.value("procreche_ingest_pending_entries", partition=partition) == 0
    assert done.value("procreche_ingest_lag_seconds", partition=partition) == 0
    assert done.value("procreche_persistence_batch_entries_sum") == 3
    assert done.value("procreche_persistence_batch_entries_count") >= 1
    assert done.value("procreche_dead_lettered_total") == 0
    assert done.value("procreche_renumbered_messages_total") == 0
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE channel = $1", household.name) == 3


@pytest.mark.usefixtures("demo_families")
async def test_the_media_worker_reports_its_queue_and_jobs(gateway: Gateway, tmp_path: Path) -> None:
    staff = await gateway.login("staff@demo.test")
    photo = jpeg_with_metadata(tmp_path / f"{uuid.uuid4()}.jpg")
    bomb = png_bomb(tmp_path / "bomb.png")
    for content, name, kind in (
        (photo.read_bytes(), "photo.jpg", "image/jpeg"),
        (bomb.read_bytes(), "b.png", "image/png"),
    ):
        response = await upload(gateway, staff, content, filename=name, content_type=kind)
        assert response.status_code == 202, response.text
    s = gateway.services
    worker = MediaWorker(s.pool, s.media_store, s.bus, s.settings)
    metrics = Metrics()
    metrics.add(MediaSource(worker))
    queued = await render(metrics)
    assert queued.value("procreche_media_queue_depth") == 2
    assert queued.value("procreche_media_queue_oldest_seconds") >= 0
    async with running(worker):

        async def finished() -> Scrape | None:
            now = await render(metrics)
            return now if now.value("procreche_media_queue_depth") == 0 else None

        done = await wait_for(finished, timeout=60)
    assert done.value("procreche_media_jobs_total", outcome="ready") == 1
    assert done.value("procreche_media_jobs_total", outcome="rejected") == 1
    assert done.value("procreche_media_jobs_total", outcome="failed") == 0


async def test_serve_shows_the_gateway_and_its_workers_on_one_metrics(settings: Settings, tmp_path: Path) -> None:
    async with gateway_process(procreche_env(settings, tmp_path), log=tmp_path / "serve.log") as gateway:
        async with httpx.AsyncClient(base_url=gateway.base, timeout=10) as http:

            async def with_workers() -> Scrape | None:
                shown = await scrape(http)
                # The gateway may answer before the workers have started.
                return shown if "procreche_media_jobs_total" in shown.types else None

            shown = await wait_for(with_workers)
        assert shown.value("procreche_connections") == 0
        assert shown.value("procreche_media_jobs_total", outcome="ready") == 0
        assert shown.value("procreche_persisted_messages_total") == 0
        assert shown.labels_of("procreche_ingest_lag_entries", "partition") == {str(p) for p in range(8)}
        assert await terminate(gateway.process) == 0


async def test_a_worker_serves_its_metrics_on_the_configured_port(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = procreche_env(settings, tmp_path, PROCRECHE_METRICS_PORT=str(port), PROCRECHE_WORKER_PARTITIONS="0-3")
    log = tmp_path / "worker.log"
    async with cli_process("worker", env=env, log=log) as process, httpx.AsyncClient(timeout=5) as http:

        async def answered() -> Scrape | None:
            assert process.returncode is None, log.read_text()
            try:
                shown = await scrape(http, f"http://127.0.0.1:{port}/metrics")
            except httpx.TransportError:
                return None
            # The listener is up before the workers have started (the schema is applied first).
            return shown if "procreche_media_jobs_total" in shown.types else None

        shown = await wait_for(answered, timeout=90, interval=0.2)
        assert shown.labels_of("procreche_ingest_lag_entries", "partition") == {"0", "1", "2", "3"}
        assert shown.value("procreche_media_queue_depth") == 0
        assert shown.get("procreche_connections") is None  # no gateway in this process
        assert await terminate(process) == 0
