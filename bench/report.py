"""bench/compare.py's results as rows, tables (Markdown) and a plot (PNG).

    .venv/bin/python -m bench.report bench/results/compare-<date>.json [--docs docs]

rewrites latest.json, latest.md (beside the raw file) and, with --docs, the plot and the
results section of docs/benchmarks.md from a raw results file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.systems import LABELS

LATENCIES = ("p50_ms", "p99_ms", "max_ms")
BEGIN = "<!-- results:begin (written by bench/compare.py) -->"
END = "<!-- results:end -->"
Row = dict[str, Any]


def level_figure(level: dict[str, Any], key: str) -> Any:
    """A level's figure; a latency of nothing delivered is no latency (None), not 0 ms."""
    if key in LATENCIES and not level.get("received"):
        return None
    return level[key]


def rows(results: dict[str, Any]) -> list[Row]:
    """The run as `{scenario, system, metric, value, unit}` rows (bench/results/latest.json)."""
    plan = results["plan"]
    out: list[Row] = []

    def add(scenario: str, system: str, metric: str, value: Any, unit: str) -> None:
        out.append({"scenario": scenario, "system": system, "metric": metric, "value": value, "unit": unit})

    for system, r in results["systems"].items():
        idle = f"idle_n{plan['idle_connections']}"
        add(idle, system, "bytes_per_idle_conn", r["idle"]["bytes_per_idle_conn"], "B")
        add(idle, system, "connections", r["idle"]["connections"], "connections")
        for (n, _), fanout in zip(plan["fanout"], r["fanout"], strict=True):
            add(f"fanout_n{n}", system, "max_rate_p99_50ms", fanout["max_rate_p99_50ms"], "deliveries/s")
            for level in fanout["levels"]:
                scenario = f"fanout_n{n}_r{level['offered_deliveries_per_s']}"
                add(scenario, system, "deliveries_per_s", level["deliveries_per_s"], "deliveries/s")
                add(scenario, system, "lost", level["lost"], "deliveries")
                for q in LATENCIES:
                    add(scenario, system, q, level_figure(level, q), "ms")
                add(scenario, system, "cpu_us_per_delivery", level["cpu_us_per_delivery"], "µs")
        chat = f"chat_m{plan['chat_pairs']}"
        add(chat, system, "messages_per_s", r["chat"]["messages_per_s"], "messages/s")
        add(chat, system, "p50_ms", r["chat"]["p50_ms"], "ms")
        add(chat, system, "p99_ms", r["chat"]["p99_ms"], "ms")
        add(chat, system, "cpu_us_per_message", r["chat"]["cpu_us_per_message"], "µs")
        storm = f"storm_k{plan['storm_clients']}"
        add(storm, system, "missed", r["storm"]["missed"], "messages")
        add(storm, system, "resume_seconds", r["storm"]["resume_seconds"], "s")
    for run in (results.get("persistence") or {}).get("runs", []):
        scenario = f"persistence_w{run['workers']}"
        add(scenario, "procreche", "rows_per_s", run["rows_per_s"], "rows/s")
        add(scenario, "procreche", "lost", run["lost"], "rows")
    return out


# ---------------------------------------------------------------------------- tables


def number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and value < 100:
        return f"{value:.3g}" if value < 10 else f"{value:.1f}"
    return f"{value:,.0f}"


def ratio(value: Any, reference: Any) -> str:
    if not isinstance(value, int | float) or not isinstance(reference, int | float) or reference == 0:
        return ""
    return f" ({value / reference:.2g}×)"


def table(
    title: str,
    systems: Sequence[str],
    labels: Sequence[str],
    cell: Callable[[str, int], Any],
    *,
    with_ratio: bool = True,
) -> list[str]:
    """A table with one row per label, one column per system; each peer's figure followed by
    its ratio to procreche's (peer / procreche)."""
    lines = [f"**{title}**", "", "| | " + " | ".join(LABELS[s] for s in systems) + " |"]
    lines.append("|---" * (len(systems) + 1) + "|")
    for i, label in enumerate(labels):
        reference = cell("procreche", i) if "procreche" in systems else None
        cells = []
        for system in systems:
            value = cell(system, i)
            shown = value if isinstance(value, str) else number(value)
            if with_ratio and system != "procreche":
                shown += ratio(value, reference)
            cells.append(shown)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown(results: dict[str, Any]) -> str:
    plan = results["plan"]
    systems = list(results["systems"])
    r = results["systems"]
    machine = results["machine"]
    versions = results["versions"]
    out = [
        f"Run of {results['date']} ({results['mode']} mode, {results['duration_seconds']:.0f} s), commit"
        f" {results['commit'] or '?'}: {machine['cores']} × {machine['cpu']}, {machine['memory_gib']} GiB,"
        f" Linux {machine['kernel']}; Redis {versions['redis_server']}, PostgreSQL {versions['postgresql']},"
        f" Python {versions['python']}. Figures in parentheses: the peer's figure over procreche's.",
        "",
        "Versions: procreche with "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if k not in ("python", "redis_server", "postgresql"))
        + "; "
        + "; ".join(
            f"{LABELS[name]}: " + ", ".join(f"{k} {v}" for k, v in v.items())
            for name, v in results["peer_versions"].items()
        )
        + ".",
        "",
    ]
    out += table(
        f"Idle: {plan['idle_connections']:,} connections, memory per connection (bytes of RSS)",
        systems,
        ["bytes per idle connection", "connections held"],
        lambda s, i: r[s]["idle"]["bytes_per_idle_conn"] if i == 0 else r[s]["idle"]["connections"],
    )
    for k, (n, rates) in enumerate(plan["fanout"]):
        out += fanout_tables(r, systems, k, n, rates)
    out += table(
        f"Household chat: {plan['chat_pairs']} pairs, one message in flight per pair",
        systems,
        ["messages/s", "p50 (ms)", "p99 (ms)", "server CPU µs per message"],
        lambda s, i: r[s]["chat"][("messages_per_s", "p50_ms", "p99_ms", "cpu_us_per_message")[i]],
    )
    out += table(
        f"Reconnect storm: {plan['storm_clients']:,} clients drop at once and resume,"
        f" {plan['storm_rate']:g} messages/s flowing",
        systems,
        ["seconds until all are back", "messages missed"],
        lambda s, i: r[s]["storm"][("resume_seconds", "missed")[i]],
        with_ratio=False,
    )
    persistence = results.get("persistence")
    if persistence:
        out += [
            "**Persistence: ingest streams → PostgreSQL (procreche only; no peer persists messages)**",
            "",
            "| workers | rows | rows/s | lost | worker µs CPU/row | PostgreSQL µs CPU/row |",
            "|---|---|---|---|---|---|",
            *(
                f"| {run['workers']} | {run['rows']:,} | {run['rows_per_s']:,.0f} | {run['lost']} |"
                f" {run['worker_cpu_us_per_row']} | {run['postgres_cpu_us_per_row']} |"
                for run in persistence["runs"]
            ),
            "",
        ]
    return "\n".join(out)


def fanout_tables(r: dict[str, Any], systems: Sequence[str], k: int, n: int, rates: Sequence[int]) -> list[str]:
    def level(s: str, i: int, key: str) -> Any:
        levels = r[s]["fanout"][k]["levels"]
        return level_figure(levels[i], key) if i < len(levels) else None

    def cpu(s: str, i: int) -> Any:
        return level(s, i, "cpu_us_per_delivery")

    def p99(s: str, i: int) -> Any:
        return level(s, i, "p99_ms")

    def others(s: str, i: int) -> str:
        return (
            f"{number(level(s, i, 'p50_ms'))} / {number(level(s, i, 'max_ms'))} ms,"
            f" {number(level(s, i, 'deliveries_per_s'))}/s, lost {number(level(s, i, 'lost'))}"
        )

    def max_rate(s: str, i: int) -> Any:
        return r[s]["fanout"][k]["max_rate_p99_50ms"]

    labels = [f"{rate:,}/s" for rate in rates]
    title = f"Fan-out to {n:,} subscribers"
    return [
        *table(f"{title}: server CPU µs per delivery", systems, labels, cpu),
        *table(f"{title}: p99 latency (ms)", systems, labels, p99),
        *table(f"{title}: p50 / max latency (ms), deliveries/s, lost", systems, labels, others, with_ratio=False),
        *table(
            f"{title}: highest offered rate with p99 ≤ 50 ms and nothing lost (deliveries/s)",
            systems,
            ["max rate"],
            max_rate,
        ),
    ]


def update_docs(path: Path, tables: str) -> None:
    """Replace the results section of docs/benchmarks.md (between the markers)."""
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n\n{tables}\n{END}{tail}", encoding="utf-8")


def publish(results: dict[str, Any], out: Path, docs: Path | None) -> None:
    """latest.json and latest.md in `out`; the plot and the results section in `docs`, or
    the plot in `out` when no docs are given."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(rows(results), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tables = markdown(results)
    (out / "latest.md").write_text(tables, encoding="utf-8")
    if docs is not None:
        plot(results, docs / "benchmarks.png")
        update_docs(docs / "benchmarks.md", tables)
    else:
        plot(results, out / "benchmarks.png")
    print(tables)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.report", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("raw", type=Path, help="a compare-<date>.json")
    parser.add_argument("--docs", type=Path, default=None, help="the docs folder to update")
    args = parser.parse_args(argv)
    results = json.loads(args.raw.read_text(encoding="utf-8"))
    publish(results, args.raw.parent, args.docs)
    return 0


# ---------------------------------------------------------------------------- plot


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(results["systems"])
    r = results["systems"]
    first_n = results["plan"]["fanout"][0][0]
    figure, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    (p99, cpu), (idle, chat) = axes
    for system in systems:
        levels = r[system]["fanout"][0]["levels"]
        rates = [lvl["offered_deliveries_per_s"] for lvl in levels]
        # Nothing delivered at a rate: no point (a gap in the line), not a zero.
        p99.plot(rates, [level_figure(lvl, "p99_ms") or math.nan for lvl in levels], marker="o", label=LABELS[system])
        cpu.plot(rates, [lvl["cpu_us_per_delivery"] or math.nan for lvl in levels], marker="o", label=LABELS[system])
    p99.set(
        title=f"Fan-out to {first_n:,} subscribers: p99 latency",
        xlabel="offered deliveries/s",
        ylabel="ms (log)",
        yscale="log",
    )
    p99.axhline(50, color="grey", linestyle=":", linewidth=1)
    cpu.set(title="Server CPU per delivery", xlabel="offered deliveries/s", ylabel="µs (log)", yscale="log")
    names = [LABELS[s].split(" + ")[0].replace("bare ", "") for s in systems]
    idle.bar(names, [(r[s]["idle"]["bytes_per_idle_conn"] or 0) / 1024 for s in systems], color="tab:blue")
    idle.set(title=f"Memory per idle connection ({results['plan']['idle_connections']:,} connections)", ylabel="KiB")
    chat.bar(names, [r[s]["chat"]["messages_per_s"] for s in systems], color="tab:green")
    chat.set(title=f"Household chat, {results['plan']['chat_pairs']} pairs", ylabel="messages/s")
    for axis in (idle, chat):
        axis.tick_params(axis="x", labelrotation=20)
    p99.legend(fontsize=8)
    figure.suptitle(f"procreche and its peers, {results['date'][:10]}, {results['machine']['cores']} cores, one run")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
