"""The peer benchmark (bench/compare.py) in its quick mode: a test of the harness — every
system installs, starts, takes every scenario and reports every metric; procreche loses
nothing and misses nothing on resume — not of speed (docs/benchmarks.md has the figures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.compare import SYSTEMS
from tests.processes import run_quick_bench

# The first run on a machine installs the peers (a virtualenv each, npm ci): minutes.
HARNESS_TIMEOUT = 900.0
PER_SYSTEM = {
    "idle_n40": ("bytes_per_idle_conn", "connections"),
    "fanout_n20": ("max_rate_p99_50ms",),
    "fanout_n20_r200": ("deliveries_per_s", "lost", "p50_ms", "p99_ms", "max_ms", "cpu_us_per_delivery"),
    "fanout_n20_r1000": ("deliveries_per_s", "lost", "p50_ms", "p99_ms", "max_ms", "cpu_us_per_delivery"),
    "chat_m4": ("messages_per_s", "p50_ms", "p99_ms", "cpu_us_per_message"),
    "storm_k20": ("missed", "resume_seconds"),
}


@pytest.mark.timeout(HARNESS_TIMEOUT + 60)
async def test_quick_mode_measures_every_system_and_procreche_loses_nothing(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    await run_quick_bench("bench.compare", tmp_path, servers, HARNESS_TIMEOUT)
    check_results(tmp_path)


def check_results(tmp_path: Path) -> None:
    rows = json.loads((tmp_path / "latest.json").read_text(encoding="utf-8"))
    assert all(set(row) == {"scenario", "system", "metric", "value", "unit"} for row in rows)
    values = {(row["scenario"], row["system"], row["metric"]): row["value"] for row in rows}
    for system in SYSTEMS:
        for scenario, metrics in PER_SYSTEM.items():
            for metric in metrics:
                value = values.get((scenario, system, metric))
                assert isinstance(value, int | float), f"{scenario} {system} {metric}: {value!r}"
        assert values[("idle_n40", system, "connections")] == 40, system
    for scenario in ("fanout_n20_r200", "fanout_n20_r1000"):
        assert values[(scenario, "procreche", "lost")] == 0
        assert values[(scenario, "procreche", "deliveries_per_s")] > 0
    assert values[("storm_k20", "procreche", "missed")] == 0
    assert values[("chat_m4", "procreche", "messages_per_s")] > 0
    assert values[("persistence_w1", "procreche", "rows_per_s")] > 0
    assert values[("persistence_w1", "procreche", "lost")] == 0

    tables = (tmp_path / "latest.md").read_text(encoding="utf-8")
    for title in ("Idle:", "Fan-out to 20 subscribers", "Household chat", "Reconnect storm", "Persistence"):
        assert title in tables
    assert (tmp_path / "benchmarks.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    raw = json.loads(next(tmp_path.glob("compare-*-quick.json")).read_text(encoding="utf-8"))
    assert set(raw["systems"]) == set(SYSTEMS)
    assert all(raw["peer_versions"][name] for name in SYSTEMS if name != "procreche")
