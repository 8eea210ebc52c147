"""The capacity harness (bench/capacity.py) in its quick mode: a test of the harness — it
runs end to end on real servers, writes every metric and loses nothing — not of speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.processes import run_quick_bench

HARNESS_TIMEOUT = 40.0

PUBLISH_METRICS = (
    "concurrency",
    "publishes",
    "publishes_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "redis_cpu_us_per_publish",
    "client_cpu_us_per_publish",
)
PERSISTENCE_METRICS = (
    "workers",
    "prefilled",
    "rows",
    "lost",
    "left_in_ingest",
    "rows_per_s",
    "worker_cpu_us_per_row",
    "postgres_cpu_us_per_row",
)


def numbers(record: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        assert isinstance(record.get(name), int | float), f"{name} missing or not a number in {record}"


async def test_quick_mode_writes_every_metric_and_loses_nothing(servers: tuple[str, str], tmp_path: Path) -> None:
    out = tmp_path / "capacity.json"
    output = await run_quick_bench("bench.capacity", out, servers, HARNESS_TIMEOUT)
    assert "rows/s" in output

    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["mode"] == "quick"
    assert results["machine"]["cores"]
    assert results["versions"]["redis_server"]
    assert results["versions"]["postgresql"]

    levels = results["publish"]["levels"]
    assert [level["concurrency"] for level in levels] == list(results["sizes"]["publish_concurrency"])
    for level in levels:
        numbers(level, PUBLISH_METRICS)
        assert level["publishes"] > 0

    runs = results["persistence"]["runs"]
    assert [run["workers"] for run in runs] == list(results["sizes"]["persist_workers"])
    for run in runs:
        numbers(run, PERSISTENCE_METRICS)
        assert run["rows"] == run["prefilled"] == results["sizes"]["persist_rows"]
        assert run["lost"] == 0
        assert run["left_in_ingest"] == 0
