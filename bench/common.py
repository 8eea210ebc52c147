"""What the benchmarks share: servers on the loopback only, child processes speaking JSON
lines, CPU and latency accounting, and the facts of the machine and the versions measured."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from redis.asyncio import Redis

from realtime.database import Pool
from realtime.messages import Author

HOST = "127.0.0.1"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
RESULTS = Path(__file__).resolve().parent / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHILD_LINE_LIMIT = 16 * 1024 * 1024  # a load generator's report carries its latency histogram


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


async def redis_cpu_seconds(redis: Redis) -> float:
    info: dict[str, Any] = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


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


def run_facts(kind: str, quick: bool, started: datetime, clock: float, env: dict[str, Any]) -> dict[str, Any]:
    """The head of a results file: what ran, when, how long, on what."""
    return {
        "kind": kind,
        "mode": "quick" if quick else "full",
        "date": started.isoformat(timespec="seconds"),
        "duration_seconds": round(time.perf_counter() - clock, 1),
        **env,
    }


def print_logs(work: Path, *patterns: str, lines: int = 30) -> None:
    """The end of the children's logs, on stderr, when a measurement failed."""
    for pattern in patterns:
        for path in sorted(work.glob(pattern)):
            text = path.read_text(errors="replace").splitlines()
            # The lines that say what went wrong, wherever they are, then the end.
            alarms = [line for line in text[:-lines] if any(w in line for w in ("ERROR", "WARNING", "Error"))]
            print(f"--- {path.name}", *alarms[-lines:], "...", *text[-lines:], sep="\n", file=sys.stderr)
