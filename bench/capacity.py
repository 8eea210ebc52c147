"""A small, repeatable capacity measurement of one Redis, one gateway and the persistence
workers, on real servers. Not the peer benchmark: enough to size a deployment.

    .venv/bin/python -m bench.capacity [--quick] [--out FILE]

Uses DATABASE_URL and REDIS_URL (default: the machine's PostgreSQL and Redis on
127.0.0.1), refuses any other host than the loopback or a Unix socket, creates a database
with a random name (dropped at the end) and works under a Redis key prefix of its own
(deleted at the end). Three measurements:

1. publish: `Bus.publish` (the Lua script) from this process with 1, 8, 32 concurrent
   publishers: publishes/s, client latency, and Redis server CPU per publish (INFO cpu);
2. fan-out: `procreche serve --no-worker` in a subprocess, N WebSocket subscribers of one
   channel spread over load-generator processes (bench/loadgen.py), messages published at
   a fixed rate: deliveries/s, lost, end-to-end latency (the publish time travels in the
   text), the gateway's CPU per delivery (from /proc/<pid>/stat);
3. persistence: the ingest streams pre-filled through `Bus.publish`, then drained by
   `PersistenceWorker.run(burst=True)` in 1 and in 2 worker processes on disjoint
   partitions (bench/persist_worker.py): rows/s, worker and PostgreSQL CPU per row.

Results go to bench/results/capacity-<date>[-quick].json, and a table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from redis.asyncio import Redis

from realtime import demo
from realtime.bus import Bus
from realtime.channels import Channel, ChannelKind
from realtime.database import Pool, migrate, open_pool
from realtime.keys import Keys
from realtime.message_store import MessageStore
from realtime.messages import Author
from realtime.passwords import Passwords
from realtime.redis_client import open_redis

HOST = "127.0.0.1"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
RESULTS = Path(__file__).resolve().parent / "results"
BENCH_PASSWORD = "capacity-bench-password"
GUARDIAN = "martin@demo.test"
HOUSEHOLD = "Famille Martin"
MAX_PUBLISHES_PER_LEVEL = 10_000_000  # a bound on each publisher loop, besides its time
STEP_TIMEOUT = 180.0  # any single wait of the harness
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHILD_LINE_LIMIT = 16 * 1024 * 1024  # a load generator's report carries its latency histogram


@dataclass(frozen=True)
class Sizes:
    publish_concurrency: tuple[int, ...]
    publish_seconds: float
    publish_channels: int
    fanout_clients: int
    fanout_processes: int
    fanout_rate: float  # messages per second on the subscribed channel
    fanout_seconds: float
    message_bytes: int
    persist_rows: int
    persist_channels: int
    persist_workers: tuple[int, ...]
    partitions: int


FULL = Sizes(
    publish_concurrency=(1, 8, 32),
    publish_seconds=5.0,
    publish_channels=64,
    fanout_clients=1000,
    fanout_processes=4,
    fanout_rate=20.0,
    fanout_seconds=30.0,
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
    fanout_clients=20,
    fanout_processes=2,
    fanout_rate=20.0,
    fanout_seconds=2.0,
    message_bytes=200,
    persist_rows=2_000,
    persist_channels=100,
    persist_workers=(1, 2),
    partitions=8,
)


# ---------------------------------------------------------------------------- helpers


def require_local(url: str) -> None:
    """Only the loopback or a Unix socket: a benchmark must never load a shared server."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return
    host = parts.hostname
    if host is None:
        # libpq's host in the query (a socket directory), as pgserver gives.
        if "host=/" in parts.query:
            return
        raise SystemExit(f"bench.capacity: {url!r} names no host; use 127.0.0.1")
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"bench.capacity: refusing non-loopback host {host!r}")


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def execute_once(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=15)
    try:
        await conn.execute(sql, timeout=60)
    finally:
        await conn.close()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def histogram_percentiles(histogram: dict[int, int], bucket_us: int) -> dict[str, float]:
    """p50, p99 and max in ms from a histogram of bucket index → count."""
    total = sum(histogram.values())
    result = {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    if not total:
        return result
    ordered = sorted(histogram.items())
    for name, q in (("p50_ms", 0.50), ("p99_ms", 0.99)):
        rank = q * total
        running = 0
        for bucket, count in ordered:
            running += count
            if running >= rank:
                result[name] = (bucket + 0.5) * bucket_us / 1000
                break
    result["max_ms"] = (ordered[-1][0] + 1) * bucket_us / 1000
    return result


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def postgres_cpu_seconds() -> float:
    """utime + stime of every `postgres` process of the machine (server and backends)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = (entry / "stat").read_text()
            if raw[raw.index("(") + 1 : raw.rindex(")")] == "postgres":
                fields = raw[raw.rindex(")") + 2 :].split()
                total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


async def redis_cpu_seconds(redis: Redis) -> float:
    info: dict[str, Any] = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def text_of(size: int) -> str:
    """A message text of `size` characters that starts with its publish time in ns."""
    head = f"{time.time_ns()} "
    return head + "x" * max(0, size - len(head))


def body_of(size: int) -> dict[str, Any]:
    return {"kind": "text", "text": text_of(size)}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


async def http_json(method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
    require_local(url)

    def call() -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    return await asyncio.to_thread(call)


async def read_json_line(process: asyncio.subprocess.Process, what: str, timeout: float) -> dict[str, Any]:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout)
    if not line:
        code = await asyncio.wait_for(process.wait(), 10)
        raise RuntimeError(f"{what} exited ({code}) without answering; see its log")
    value: dict[str, Any] = json.loads(line)
    return value


async def send_line(process: asyncio.subprocess.Process, value: dict[str, Any]) -> None:
    assert process.stdin is not None
    process.stdin.write(json.dumps(value).encode() + b"\n")
    await process.stdin.drain()


async def stop(process: asyncio.subprocess.Process, *, term_first: bool) -> None:
    if process.returncode is None and term_first:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 15)
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    await asyncio.wait_for(process.wait(), 15)


@contextlib.asynccontextmanager
async def child(args: Sequence[str], log: IO[bytes], env: dict[str, str] | None = None) -> AsyncIterator[Any]:
    """`python -m …` with a JSON-lines conversation on stdin/stdout; stderr to `log`."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        env=env,
        limit=CHILD_LINE_LIMIT,
    )
    try:
        yield process
    finally:
        await stop(process, term_first=False)


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# ---------------------------------------------------------------------------- 1. publish


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


# ---------------------------------------------------------------------------- 2. fan-out


async def wait_healthy(base: str, process: asyncio.subprocess.Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"procreche serve exited with {process.returncode}; see its log")
        with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
            await http_json("GET", f"{base}/healthz")
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"procreche serve did not answer /healthz within {timeout}s")


async def login(base: str) -> str:
    reply = await http_json("POST", f"{base}/api/login", {"email": GUARDIAN, "password": BENCH_PASSWORD})
    token: str = reply["token"]
    terms = await http_json("GET", f"{base}/api/terms")
    await http_json("POST", f"{base}/api/terms/accept", {"version": terms["version"]}, token)
    return token


async def measure_fanout(
    redis: Redis, pool: Pool, settings_env: dict[str, str], author: Author, channel: Channel, sizes: Sizes, work: Path
) -> dict[str, Any]:
    port = free_port()
    base = f"http://{HOST}:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCRECHE_")} | settings_env
    env["PROCRECHE_DATA"] = str(work / "gateway-data")
    prefix = settings_env["PROCRECHE_REDIS_PREFIX"]
    bus = Bus(redis, Keys(prefix, sizes.partitions), MessageStore(pool), history_maxlen=1000)
    with (work / "gateway.log").open("wb") as gateway_log, (work / "loadgen.log").open("wb") as loadgen_log:
        gateway = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--no-worker",
            "--host",
            HOST,
            "--port",
            str(port),
            env=env,
            stdout=gateway_log,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await wait_healthy(base, gateway, 90)
            token = await login(base)
            async with contextlib.AsyncExitStack() as stack:
                loadgens = [
                    await stack.enter_async_context(
                        child(
                            (
                                "bench.loadgen",
                                "--url",
                                f"ws://{HOST}:{port}/ws",
                                "--token",
                                token,
                                "--channel",
                                channel.name,
                                "--connections",
                                str(n),
                            ),
                            loadgen_log,
                        )
                    )
                    for n in split(sizes.fanout_clients, sizes.fanout_processes)
                    if n
                ]
                ready = [await read_json_line(p, "bench.loadgen", STEP_TIMEOUT) for p in loadgens]
                connected = sum(int(r["ready"]) for r in ready)
                result = await publish_at_rate(bus, redis, gateway.pid, author, channel, sizes)
                for p in loadgens:
                    await send_line(p, {"first": result["first_seq"], "last": result["last_seq"]})
                reports = [await read_json_line(p, "bench.loadgen", STEP_TIMEOUT) for p in loadgens]
                finish = await cpu_snapshot(redis, gateway.pid)
        finally:
            await stop(gateway, term_first=True)
    start = result.pop("cpu")
    histogram: dict[int, int] = {}
    for report in reports:
        for bucket, count in report["histogram"].items():
            histogram[int(bucket)] = histogram.get(int(bucket), 0) + int(count)
    delivered = sum(int(r["received"]) for r in reports)
    window = finish["wall"] - start["wall"]
    gateway_cpu = finish["gateway"] - start["gateway"]
    busy = finish["busy"] - start["busy"]
    total = finish["total"] - start["total"]
    loadgen_cpu = sum(float(r["cpu_seconds"]) for r in reports)
    return {
        "clients": connected,
        "loadgen_processes": len(reports),
        "channel_subscribers": connected,
        "offered_msgs_per_s": sizes.fanout_rate,
        "message_bytes": sizes.message_bytes,
        "published": result["published"],
        "publish_seconds": round(result["seconds"], 3),
        "deliveries": delivered,
        "expected_deliveries": sum(int(r["expected"]) for r in reports),
        "deliveries_per_s": round(delivered / result["seconds"], 1),
        "lost": sum(int(r["lost"]) for r in reports),
        "duplicates": sum(int(r["duplicates"]) for r in reports),
        "closed_connections": sum(int(r["closed"]) for r in reports),
        # Subscribes answered `unavailable` and retried by the load generator (docs/protocol.md).
        "subscribe_retries": sum(int(r["subscribe_retries"]) for r in reports),
        "subscribe_retry_errors": sorted({e for r in reports for e in r["subscribe_retry_errors"]}),
        **{f"latency_{k}": round(v, 2) for k, v in histogram_percentiles(histogram, 100).items()},
        "gateway_cpu_seconds": round(gateway_cpu, 2),
        "gateway_cpu_us_per_delivery": round(gateway_cpu / delivered * 1e6, 2) if delivered else 0.0,
        "gateway_cpu_share": round(gateway_cpu / window, 3),
        # At a few messages per second Redis's own baseline dominates: a share, not a cost per message.
        "redis_cpu_share": round((finish["redis"] - start["redis"]) / window, 3),
        "loadgen_cpu_us_per_delivery": round(loadgen_cpu / delivered * 1e6, 2) if delivered else 0.0,
        "machine_busy_share": round(busy / total, 3) if total else 0.0,
        "window_seconds": round(window, 3),
    }


async def cpu_snapshot(redis: Redis, gateway_pid: int) -> dict[str, float]:
    busy, total = machine_busy()
    return {
        "wall": time.perf_counter(),
        "gateway": process_cpu_seconds(gateway_pid),
        "redis": await redis_cpu_seconds(redis),
        "busy": busy,
        "total": total,
    }


async def publish_at_rate(
    bus: Bus, redis: Redis, gateway_pid: int, author: Author, channel: Channel, sizes: Sizes
) -> dict[str, Any]:
    """Publish at `fanout_rate` for `fanout_seconds` (one publisher, no burst to catch up)."""
    count = max(1, round(sizes.fanout_rate * sizes.fanout_seconds))
    interval = 1.0 / sizes.fanout_rate
    loop = asyncio.get_running_loop()
    snapshot = await cpu_snapshot(redis, gateway_pid)
    start = loop.time()
    seqs: list[int] = []
    for k in range(count):
        delay = start + k * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        published = await bus.publish(channel, author, body_of(sizes.message_bytes), str(uuid.uuid4()))
        seqs.append(published.seq)
    return {
        "published": len(seqs),
        "first_seq": seqs[0],
        "last_seq": seqs[-1],
        "seconds": max(loop.time() - start, count * interval),
        "cpu": snapshot,
    }


# ---------------------------------------------------------------------------- 3. persistence


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


async def staff_author(pool: Pool) -> Author:
    """The demo's staff member, who publishes what the bench measures."""
    staff = await pool.fetchrow("SELECT id, display_name FROM users WHERE email = $1", "staff@demo.test")
    assert staff is not None, "the demo is not seeded"
    return Author(int(staff["id"]), str(staff["display_name"]))


def host_facts() -> dict[str, Any]:
    """The machine, and the commit measured."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        root = Path(__file__).resolve().parent.parent
        git = ("git", "-C", str(root))
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
        changes = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        if commit and changes:
            commit += " (with uncommitted changes)"
    return {
        "machine": {
            "cpu": model,
            "cores": os.cpu_count(),
            "memory_gib": round(mem_kib / 1024 / 1024, 1),
            "kernel": platform.release(),
        },
        "commit": commit,
    }


async def environment(redis: Redis, pool: Pool) -> dict[str, Any]:
    server: dict[str, Any] = await redis.info("server")
    facts = host_facts()
    return {
        "machine": facts["machine"],
        "versions": {
            "python": platform.python_version(),
            "redis_server": server.get("redis_version"),
            "postgresql": await pool.fetchval("SHOW server_version"),
            **{
                name: importlib.metadata.version(name)
                for name in ("uvicorn", "starlette", "websockets", "redis", "asyncpg", "msgpack")
            },
        },
        "commit": facts["commit"],
    }


async def delete_prefix(redis: Redis, prefix: str) -> int:
    deleted = 0
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += int(await redis.delete(*batch))
            batch = []
    if batch:
        deleted += int(await redis.delete(*batch))
    return deleted


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
                    households = await demo.seed(pool, Passwords(), BENCH_PASSWORD)
                    author = await staff_author(pool)
                    env = await environment(redis, pool)
                    publish = await measure_publish(redis, pool, f"{prefix}p", author, sizes)
                    await delete_prefix(redis, f"{prefix}p")
                    gateway_env = {
                        "DATABASE_URL": url,
                        "REDIS_URL": redis_url,
                        "PROCRECHE_REDIS_PREFIX": f"{prefix}f",
                        "PROCRECHE_PARTITIONS": str(sizes.partitions),
                        "PROCRECHE_DEMO_PASSWORD": BENCH_PASSWORD,
                    }
                    channel = Channel(ChannelKind.FAMILY, households[HOUSEHOLD])
                    try:
                        fanout = await measure_fanout(redis, pool, gateway_env, author, channel, sizes, work)
                    except BaseException:
                        print_logs(work, "gateway.log", "loadgen.log")
                        raise
                    await delete_prefix(redis, f"{prefix}f")
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
        "kind": "procreche capacity (bench/capacity.py)",
        "mode": "quick" if quick else "full",
        "date": started.isoformat(timespec="seconds"),
        "duration_seconds": round(time.perf_counter() - clock, 1),
        **env,
        "sizes": asdict(sizes),
        "publish": publish,
        "fanout": fanout,
        "persistence": persistence,
    }


def print_logs(work: Path, *patterns: str, lines: int = 30) -> None:
    """The end of the children's logs, on stderr, when a measurement failed."""
    for pattern in patterns:
        for path in sorted(work.glob(pattern)):
            text = path.read_text(errors="replace").splitlines()
            # The lines that say what went wrong, wherever they are, then the end.
            alarms = [line for line in text[:-lines] if any(w in line for w in ("ERROR", "WARNING", "Error"))]
            print(f"--- {path.name}", *alarms[-lines:], "...", *text[-lines:], sep="\n", file=sys.stderr)


def publish_row(level: dict[str, Any]) -> tuple[str, str]:
    return (
        f"publish, {level['concurrency']} concurrent publishers",
        f"{level['publishes_per_s']:,.0f}/s; p50 {level['latency_p50_ms']} ms, p99 {level['latency_p99_ms']} ms;"
        f" Redis {level['redis_cpu_us_per_publish']} µs CPU/publish ({level['redis_cpu_share']:.0%} of a core);"
        f" client {level['client_cpu_share']:.0%} of a core",
    )


def fanout_row(f: dict[str, Any]) -> tuple[str, str]:
    return (
        f"fan-out, {f['clients']:,} clients, {f['offered_msgs_per_s']:g} msg/s of {f['message_bytes']} B",
        f"{f['deliveries_per_s']:,.0f} deliveries/s; lost {f['lost']}; latency p50 {f['latency_p50_ms']} ms,"
        f" p99 {f['latency_p99_ms']} ms, max {f['latency_max_ms']} ms; gateway {f['gateway_cpu_us_per_delivery']}"
        f" µs CPU/delivery ({f['gateway_cpu_share']:.0%} of a core); machine {f['machine_busy_share']:.0%} busy",
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
        fanout_row(results["fanout"]),
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
