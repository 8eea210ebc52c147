"""A small, repeatable capacity measurement of one Redis and the persistence workers, on
real servers, to size a deployment. The gateway, against its peers, is bench/compare.py's.

    .venv/bin/python -m bench.capacity [--quick] [--out FILE]

Uses DATABASE_URL and REDIS_URL (default: the machine's PostgreSQL and Redis on
127.0.0.1), refuses any other host than the loopback or a Unix socket, creates a database
with a random name (dropped at the end) and works under a Redis key prefix of its own
(deleted at the end). Two measurements:

1. publish: `Bus.publish` (the Lua script) from this process with 1, 8, 32 concurrent
   publishers: publishes/s, client latency, and Redis server CPU per publish (INFO cpu);
2. persistence: the ingest streams pre-filled through `Bus.publish`, then drained by
   `PersistenceWorker.run(burst=True)` in 1 and in 2 worker processes on disjoint
   partitions (bench/persist_worker.py): rows/s, worker and PostgreSQL CPU per row.

Results go to bench/results/capacity-<date>[-quick].json, and a table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.common import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    RESULTS,
    child,
    delete_prefix,
    environment,
    execute_once,
    percentile,
    postgres_cpu_seconds,
    print_logs,
    read_json_line,
    redis_cpu_seconds,
    require_local,
    run_facts,
    send_line,
    split,
    staff_author,
    with_database,
)
from realtime import demo
from realtime.bus import Bus
from realtime.channels import Channel, ChannelKind
from realtime.database import Pool, migrate, open_pool
from realtime.keys import Keys
from realtime.message_store import MessageStore
from realtime.messages import Author
from realtime.passwords import Passwords
from realtime.redis_client import open_redis

BENCH_PASSWORD = "capacity-bench-password"
MAX_PUBLISHES_PER_LEVEL = 10_000_000  # a bound on each publisher loop, besides its time
STEP_TIMEOUT = 180.0  # any single wait of the harness


@dataclass(frozen=True)
class Sizes:
    publish_concurrency: tuple[int, ...]
    publish_seconds: float
    publish_channels: int
    message_bytes: int
    persist_rows: int
    persist_channels: int
    persist_workers: tuple[int, ...]
    partitions: int


FULL = Sizes(
    publish_concurrency=(1, 8, 32),
    publish_seconds=5.0,
    publish_channels=64,
    message_bytes=200,
    persist_rows=50_000,
    persist_channels=1000,
    persist_workers=(1, 2),
    partitions=8,
)
QUICK = Sizes(
    publish_concurrency=(1, 8),
    publish_seconds=1.0,
    publish_channels=16,
    message_bytes=200,
    persist_rows=2_000,
    persist_channels=100,
    persist_workers=(1, 2),
    partitions=8,
)


# ---------------------------------------------------------------------------- helpers


# ---------------------------------------------------------------------------- 1. publish


def text_of(size: int) -> str:
    """A message text of `size` characters that starts with its publish time in ns."""
    head = f"{time.time_ns()} "
    return head + "x" * max(0, size - len(head))


def body_of(size: int) -> dict[str, Any]:
    return {"kind": "text", "text": text_of(size)}


async def measure_publish(redis: Redis, pool: Pool, prefix: str, author: Author, sizes: Sizes) -> dict[str, Any]:
    bus = Bus(redis, Keys(prefix, sizes.partitions), MessageStore(pool), history_maxlen=1000)
    channels = [Channel(ChannelKind.FAMILY, i) for i in range(1, sizes.publish_channels + 1)]
    for channel in channels:  # seed every channel's sequence first (NOSEQ → PostgreSQL)
        await bus.publish(channel, author, body_of(sizes.message_bytes), str(uuid.uuid4()))
    loop = asyncio.get_running_loop()
    levels: list[dict[str, Any]] = []
    for concurrency in sizes.publish_concurrency:
        latencies: list[float] = []
        end = loop.time() + sizes.publish_seconds

        async def publisher(
            index: int, concurrency: int = concurrency, end: float = end, latencies: list[float] = latencies
        ) -> None:
            for k in range(MAX_PUBLISHES_PER_LEVEL):
                if loop.time() >= end:
                    return
                channel = channels[(index + k * concurrency) % len(channels)]
                start = time.perf_counter()
                await bus.publish(channel, author, body_of(sizes.message_bytes), str(uuid.uuid4()))
                latencies.append(time.perf_counter() - start)

        redis_cpu, own_cpu, start = await redis_cpu_seconds(redis), time.process_time(), time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(publisher(i) for i in range(concurrency))), sizes.publish_seconds + STEP_TIMEOUT
        )
        elapsed = time.perf_counter() - start
        own_cpu = time.process_time() - own_cpu
        redis_cpu = await redis_cpu_seconds(redis) - redis_cpu
        latencies.sort()
        count = len(latencies)
        levels.append(
            {
                "concurrency": concurrency,
                "publishes": count,
                "seconds": round(elapsed, 3),
                "publishes_per_s": round(count / elapsed, 1),
                "latency_p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
                "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
                "redis_cpu_us_per_publish": round(redis_cpu / count * 1e6, 2) if count else 0.0,
                "redis_cpu_share": round(redis_cpu / elapsed, 3),
                "client_cpu_us_per_publish": round(own_cpu / count * 1e6, 1) if count else 0.0,
                "client_cpu_share": round(own_cpu / elapsed, 3),
            }
        )
    return {"channels": len(channels), "message_bytes": sizes.message_bytes, "levels": levels}


# ---------------------------------------------------------------------------- 2. persistence


async def measure_persistence(
    redis: Redis,
    pool: Pool,
    database_url: str,
    redis_url: str,
    prefix: str,
    author: Author,
    sizes: Sizes,
    work: Path,
) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for workers in sizes.persist_workers:
        run_prefix = f"{prefix}{workers}"
        keys = Keys(run_prefix, sizes.partitions)
        bus = Bus(redis, keys, MessageStore(pool), history_maxlen=100)
        before = int(await pool.fetchval("SELECT count(*) FROM messages"))
        fill = await prefill(bus, author, sizes)
        queued = sum([int(await redis.xlen(stream)) for stream in keys.all_ingest()])
        shares = split(sizes.partitions, workers)
        ranges, low = [], 0
        for share in shares:
            ranges.append(f"{low}-{low + share - 1}")
            low += share
        with (work / f"workers-{workers}.log").open("wb") as log:
            async with contextlib.AsyncExitStack() as stack:
                processes = [
                    await stack.enter_async_context(
                        child(
                            (
                                "bench.persist_worker",
                                "--database-url",
                                database_url,
                                "--redis-url",
                                redis_url,
                                "--prefix",
                                run_prefix,
                                "--partitions",
                                span,
                                "--total-partitions",
                                str(sizes.partitions),
                            ),
                            log,
                        )
                    )
                    for span in ranges
                ]
                for p in processes:
                    await read_json_line(p, "bench.persist_worker", STEP_TIMEOUT)
                pg_cpu, start = postgres_cpu_seconds(), time.perf_counter()
                for p in processes:
                    await send_line(p, {"go": True})
                reports = [await read_json_line(p, "bench.persist_worker", STEP_TIMEOUT) for p in processes]
                wall = time.perf_counter() - start
                pg_cpu = postgres_cpu_seconds() - pg_cpu
                for p in processes:
                    await send_line(p, {"bye": True})
                    await asyncio.wait_for(p.wait(), STEP_TIMEOUT)
        after = int(await pool.fetchval("SELECT count(*) FROM messages"))
        left = sum([int(await redis.xlen(stream)) for stream in keys.all_ingest()])
        rows = after - before
        seconds = max(float(r["seconds"]) for r in reports)
        worker_cpu = sum(float(r["cpu_seconds"]) for r in reports)
        runs.append(
            {
                "workers": workers,
                "partitions": ranges,
                "prefilled": fill["published"],
                "prefill_publishes_per_s": fill["publishes_per_s"],
                "queued": queued,
                "rows": rows,
                "lost": fill["published"] - rows,
                "left_in_ingest": left,
                "seconds": round(seconds, 3),
                "wall_seconds": round(wall, 3),
                "rows_per_s": round(rows / seconds, 1) if seconds else 0.0,
                "worker_cpu_us_per_row": round(worker_cpu / rows * 1e6, 1) if rows else 0.0,
                "postgres_cpu_us_per_row": round(pg_cpu / rows * 1e6, 1) if rows else 0.0,
                "per_worker": reports,
            }
        )
    return {"batch": 500, "channels": sizes.persist_channels, "runs": runs}


async def prefill(bus: Bus, author: Author, sizes: Sizes) -> dict[str, Any]:
    """`persist_rows` messages through Bus.publish, over `persist_channels` channels."""
    channels = [Channel(ChannelKind.FAMILY, i) for i in range(1, sizes.persist_channels + 1)]
    concurrency = 32
    counts = split(sizes.persist_rows, concurrency)

    async def publisher(index: int) -> None:
        for k in range(counts[index]):
            channel = channels[(index + k * concurrency) % len(channels)]
            await bus.publish(channel, author, body_of(sizes.message_bytes), str(uuid.uuid4()))

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(publisher(i) for i in range(concurrency))), STEP_TIMEOUT)
    elapsed = time.perf_counter() - start
    return {"published": sizes.persist_rows, "publishes_per_s": round(sizes.persist_rows / elapsed, 1)}


# ---------------------------------------------------------------------------- the run


async def measure(database_url: str, redis_url: str, sizes: Sizes, *, quick: bool) -> dict[str, Any]:
    require_local(database_url)
    require_local(redis_url)
    name = f"procreche_capacity_{secrets.token_hex(4)}"
    prefix = f"capbench{secrets.token_hex(4)}"
    started = datetime.now(UTC)
    clock = time.perf_counter()
    await execute_once(database_url, f'CREATE DATABASE "{name}"')
    url = with_database(database_url, name)
    try:
        async with (
            open_redis(redis_url) as redis,
            contextlib.AsyncExitStack() as cleanup,
        ):
            cleanup.push_async_callback(delete_prefix, redis, prefix)
            with tempfile.TemporaryDirectory(prefix="procreche-capacity-") as tmp:
                work = Path(tmp)
                async with open_pool(url, max_size=8) as pool:
                    await migrate(pool)
                    await demo.seed(pool, Passwords(), BENCH_PASSWORD)
                    author = await staff_author(pool)
                    env = await environment(redis, pool)
                    publish = await measure_publish(redis, pool, f"{prefix}p", author, sizes)
                    await delete_prefix(redis, f"{prefix}p")
                    try:
                        persistence = await measure_persistence(
                            redis, pool, url, redis_url, f"{prefix}w", author, sizes, work
                        )
                    except BaseException:
                        print_logs(work, "workers-*.log")
                        raise
    finally:
        await execute_once(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return {
        **run_facts("procreche capacity (bench/capacity.py)", quick, started, clock, env),
        "sizes": asdict(sizes),
        "publish": publish,
        "persistence": persistence,
    }


def publish_row(level: dict[str, Any]) -> tuple[str, str]:
    return (
        f"publish, {level['concurrency']} concurrent publishers",
        f"{level['publishes_per_s']:,.0f}/s; p50 {level['latency_p50_ms']} ms, p99 {level['latency_p99_ms']} ms;"
        f" Redis {level['redis_cpu_us_per_publish']} µs CPU/publish ({level['redis_cpu_share']:.0%} of a core);"
        f" client {level['client_cpu_share']:.0%} of a core",
    )


def persistence_row(run: dict[str, Any]) -> tuple[str, str]:
    return (
        f"persistence, {run['workers']} worker(s), {run['prefilled']:,} rows",
        f"{run['rows_per_s']:,.0f} rows/s; lost {run['lost']};"
        f" worker {run['worker_cpu_us_per_row']} µs CPU/row;"
        f" PostgreSQL {run['postgres_cpu_us_per_row']} µs CPU/row",
    )


def table(results: dict[str, Any]) -> str:
    rows = [
        *(publish_row(level) for level in results["publish"]["levels"]),
        *(persistence_row(run) for run in results["persistence"]["runs"]),
    ]
    width = max(len(r[0]) for r in rows)
    machine = results["machine"]
    head = (
        f"procreche capacity ({results['mode']}), {results['date']}, {machine['cores']} × {machine['cpu']},"
        f" {machine['memory_gib']} GiB; Redis {results['versions']['redis_server']},"
        f" PostgreSQL {results['versions']['postgresql']}, Python {results['versions']['python']}"
    )
    return "\n".join([head, *(f"{a.ljust(width)}  {b}" for a, b in rows)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.capacity", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness, measures little")
    parser.add_argument("--out", type=Path, help="the JSON file (default bench/results/capacity-<date>.json)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    results = asyncio.run(measure(args.database_url, args.redis_url, sizes, quick=args.quick))
    out: Path = args.out or RESULTS / f"capacity-{results['date'][:10]}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(table(results))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
