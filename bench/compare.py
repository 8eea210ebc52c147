"""procreche against its peers, side by side, on this machine, in one run (`make bench`).

    .venv/bin/python -m bench.compare [--quick] [--systems procreche,socketio_node,…] [--out DIR]

Systems: procreche (gateway + persistence worker, real PostgreSQL and Redis) and the peers
of bench/peers/ (Django Channels + channels_redis, python-socketio + its Redis manager,
Socket.IO on Node + its Redis adapter, and the ceiling: a bare `websockets` server relaying
Redis pub/sub). Each peer is installed in its own environment (bench/peers.py). Load comes
from bench/swarm.py processes (one client implementation for all systems, a fixed seed),
and each scenario starts the server afresh:

1. idle: N idle connections (procreche: authenticated and subscribed) — RSS per connection;
2. fan-out: one publisher, N subscribers of one group channel, open loop at fixed offered
   rates — deliveries/s, lost, p50/p99/max latency, server CPU µs per delivery, and the
   highest rate with p99 ≤ 50 ms and nothing lost;
3. chat: M pairs (a household and the staff), one message in flight per pair — messages/s, p99;
4. storm: K subscribers drop their connections at once while messages flow, and resume —
   seconds until all are back, messages missed;
5. persistence (procreche only: no peer persists): rows/s from the ingest streams into
   PostgreSQL (bench/capacity.py's measurement).

Uses DATABASE_URL and REDIS_URL (default: the machine's servers on 127.0.0.1; any other
host is refused), a database created and dropped for the run, and Redis key prefixes of its
own, deleted at the end. Writes bench/results/compare-<date>.json (raw), latest.json (rows
`{scenario, system, metric, value, unit}`), latest.md (tables) and, in full mode, the plot
docs/benchmarks.png and the results section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import capacity, common, report
from bench.common import (
    HOST,
    child,
    delete_prefix,
    execute_once,
    free_port,
    histogram_percentiles,
    process_cpu_seconds,
    read_json_line,
    redis_cpu_seconds,
    require_local,
    run_facts,
    send_line,
    stop,
    with_database,
)
from bench.swarm import BUCKET_US
from bench.systems import LABELS, PEERS, Installed, install
from realtime import demo
from realtime.database import Pool, migrate, open_pool
from realtime.embedded import servers as embedded_servers
from realtime.passwords import Passwords
from realtime.redis_client import open_redis
from realtime.tokens import token_digest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"
SYSTEMS = ("procreche", *PEERS)
SCENARIOS = ("idle", "fanout", "chat", "storm", "persistence")
PASSWORD = "compare-bench-password"
STEP_TIMEOUT = 300.0
START_TIMEOUT = 90.0
P99_GOAL_MS = 50.0


@dataclass(frozen=True)
class Plan:
    idle_connections: int
    fanout: tuple[tuple[int, tuple[int, ...]], ...]  # (subscribers, offered deliveries/s per level)
    level_seconds: float
    min_messages: int
    drain_seconds: float
    chat_pairs: int
    chat_seconds: float
    storm_clients: int
    storm_rate: float  # messages/s on the channel while the clients drop and resume
    storm_seconds: float
    storm_offline: float  # how long the dropped clients stay away
    swarms: int  # load-generator processes per scenario
    settle_seconds: float
    persist_rows: int
    persist_workers: tuple[int, ...]


FULL = Plan(
    idle_connections=5000,
    fanout=((1000, (1000, 5000, 10_000, 20_000, 30_000, 50_000)), (5000, (10_000, 30_000, 50_000))),
    level_seconds=8.0,
    min_messages=10,
    drain_seconds=15.0,
    chat_pairs=200,
    chat_seconds=10.0,
    storm_clients=1000,
    storm_rate=10.0,
    storm_seconds=9.0,
    storm_offline=1.0,
    swarms=3,
    settle_seconds=3.0,
    persist_rows=100_000,
    persist_workers=(1, 2),
)
QUICK = Plan(
    idle_connections=40,
    fanout=((20, (200, 1000)),),
    level_seconds=1.0,
    min_messages=5,
    drain_seconds=5.0,
    chat_pairs=4,
    chat_seconds=1.0,
    storm_clients=20,
    storm_rate=20.0,
    storm_seconds=2.0,
    storm_offline=0.3,
    swarms=2,
    settle_seconds=0.5,
    persist_rows=2000,
    persist_workers=(1,),
)


@dataclass(frozen=True)
class Audience:
    """What a system's clients connect to, and with which credentials."""

    group: str
    publisher_token: str
    subscriber_token: str
    pairs: list[list[str]]  # [room, token of side a, token of side b]


@dataclass
class Server:
    system: str
    port: int
    pid: int
    worker_pid: int | None = None


def split(total: int, parts: int) -> list[int]:
    return [n for n in common.split(total, parts) if n]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def ask(process: asyncio.subprocess.Process, command: dict[str, Any], timeout: float) -> dict[str, Any]:
    await send_line(process, command)
    return await read_json_line(process, f"bench.swarm {command.get('cmd')}", timeout)


async def ask_all(
    processes: Sequence[asyncio.subprocess.Process], commands: Sequence[dict[str, Any]], timeout: float
) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(ask(p, c, timeout) for p, c in zip(processes, commands, strict=True))))


def merged_histogram(reports: Sequence[dict[str, Any]]) -> dict[int, int]:
    histogram: dict[int, int] = {}
    for r in reports:
        for bucket, count in r["histogram"].items():
            histogram[int(bucket)] = histogram.get(int(bucket), 0) + int(count)
    return histogram


def latency(reports: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """p50, p99, max in ms; None when nothing was received."""
    histogram = merged_histogram(reports)
    return {k: round(v, 2) if histogram else None for k, v in histogram_percentiles(histogram, BUCKET_US).items()}


async def wait_listening(port: int, process: asyncio.subprocess.Process, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}; see its log")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on {port} within {START_TIMEOUT}s")


class Bench:
    def __init__(
        self, plan: Plan, database_url: str, redis_url: str, prefix: str, work: Path, peers: dict[str, Installed]
    ) -> None:
        self.plan = plan
        self.database_url = database_url
        self.redis_url = redis_url
        self.prefix = prefix
        self.work = work
        self.peers = peers
        self.audiences: dict[str, Audience] = {}
        self.seed = 20261125

    # ------------------------------------------------------------------ servers

    def procreche_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROCRECHE_")}
        return env | {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "PROCRECHE_REDIS_PREFIX": f"{self.prefix}pc",
            "PROCRECHE_DATA": str(self.work / "procreche-data"),
            "PROCRECHE_DEMO_PASSWORD": PASSWORD,
            # The per-connection publish budget protects a structure from a runaway client;
            # the bench's one publisher and its chat pairs are such clients by design.
            "PROCRECHE_RATE_PER_SECOND": "1000000",
            "PROCRECHE_RATE_BURST": "1000000",
        }

    @contextlib.asynccontextmanager
    async def server(self, system: str, scenario: str) -> AsyncIterator[Server]:
        port = free_port()
        log = (self.work / f"{system}-{scenario}.log").open("wb")
        processes: list[asyncio.subprocess.Process] = []
        try:
            if system == "procreche":
                env = self.procreche_env()
                cli = (sys.executable, "-m", "gateway.cli")
                gateway = await asyncio.create_subprocess_exec(
                    *cli, "serve", "--no-worker", "--host", HOST, "--port", str(port), env=env, stdout=log, stderr=log
                )
                processes.append(gateway)
                worker = await asyncio.create_subprocess_exec(*cli, "worker", env=env, stdout=log, stderr=log)
                processes.append(worker)
                await wait_listening(port, gateway, "procreche serve")
                yield Server(system, port, gateway.pid, worker.pid)
            else:
                installed = self.peers[system]
                env = os.environ | {
                    "BENCH_HOST": HOST,
                    "BENCH_PORT": str(port),
                    "REDIS_URL": self.redis_url,
                    "BENCH_PREFIX": f"{self.prefix}{system}",
                }
                argv = installed.argv
                if "uvicorn" in argv:
                    argv = (*argv, "--host", HOST, "--port", str(port))
                process = await asyncio.create_subprocess_exec(
                    *argv, cwd=installed.folder, env=env, stdout=log, stderr=log
                )
                processes.append(process)
                await wait_listening(port, process, system)
                yield Server(system, port, process.pid)
        except BaseException:
            log.flush()
            common.print_logs(self.work, f"{system}-{scenario}.log", f"swarm-{system}.log")
            raise
        finally:
            for process in processes:
                await stop(process, term_first=True)
            log.close()

    @contextlib.asynccontextmanager
    async def swarms(self, system: str, port: int, count: int) -> AsyncIterator[list[asyncio.subprocess.Process]]:
        with (self.work / f"swarm-{system}.log").open("ab") as log:
            async with contextlib.AsyncExitStack() as stack:
                processes = []
                for _ in range(count):
                    self.seed += 1
                    argv = ("bench.swarm", "--system", system, "--port", str(port), "--seed", str(self.seed))
                    processes.append(await stack.enter_async_context(child(argv, log)))
                yield processes

    async def open(
        self,
        swarms: Sequence[asyncio.subprocess.Process],
        n: int,
        room: str,
        token: str,
        role: str = "s",
        *,
        require_all: bool = True,
    ) -> dict[str, Any]:
        shares = split(n, len(swarms))
        replies = await ask_all(
            swarms[: len(shares)],
            [{"cmd": "open", "n": share, "room": room, "token": token, "role": role} for share in shares],
            STEP_TIMEOUT,
        )
        errors: dict[str, int] = {}
        for r in replies:
            for error, count in r["errors"].items():
                errors[error] = errors.get(error, 0) + count
        ready = sum(r["ready"] for r in replies)
        if require_all and ready < n:
            raise RuntimeError(f"only {ready} of {n} clients joined {room}: {errors}")
        return {
            "ready": ready,
            "failed": sum(r["failed"] for r in replies),
            "errors": errors,
            "seconds": max(r["seconds"] for r in replies),
            "retries": sum(r["retries"] for r in replies),
        }

    # ------------------------------------------------------------------ scenarios

    async def idle(self, system: str) -> dict[str, Any]:
        n = self.plan.idle_connections
        audience = self.audiences[system]
        async with self.server(system, "idle") as server, self.swarms(system, server.port, self.plan.swarms) as swarms:
            # One connection first, so that what is allocated once (imports, pools) is not counted.
            await self.open(swarms, 1, audience.group, audience.subscriber_token)
            await ask(swarms[0], {"cmd": "close"}, STEP_TIMEOUT)
            await asyncio.sleep(self.plan.settle_seconds)
            before = rss_bytes(server.pid)
            opened = await self.open(swarms, n, audience.group, audience.subscriber_token, require_all=False)
            await asyncio.sleep(self.plan.settle_seconds)
            after = rss_bytes(server.pid)
        held = opened["ready"]
        return {
            "connections": held,
            "failed": opened["failed"],
            "errors": opened["errors"],
            "connect_seconds": opened["seconds"],
            "rss_before": before,
            "rss_after": after,
            "bytes_per_idle_conn": round((after - before) / held) if held else None,
        }

    async def fanout(self, system: str, subscribers: int, rates: Sequence[int]) -> dict[str, Any]:
        plan = self.plan
        audience = self.audiences[system]
        levels: list[dict[str, Any]] = []
        async with (
            open_redis(self.redis_url) as redis,
            self.server(system, f"fanout{subscribers}") as server,
            self.swarms(system, server.port, plan.swarms) as swarms,
            self.swarms(system, server.port, 1) as publisher,
        ):
            opened = await self.open(swarms, subscribers, audience.group, audience.subscriber_token)
            await self.open(publisher, 1, audience.group, audience.publisher_token, role="p")
            await asyncio.sleep(plan.settle_seconds)
            first = 1
            for rate in rates:
                per_second = rate / subscribers
                count = max(plan.min_messages, round(per_second * plan.level_seconds))
                await ask_all(swarms, [{"cmd": "reset", "first": first}] * len(swarms), STEP_TIMEOUT)
                cpu, redis_cpu = process_cpu_seconds(server.pid), await redis_cpu_seconds(redis)
                clock = time.perf_counter()
                published = await ask(
                    publisher[0],
                    {"cmd": "publish", "rate": per_second, "count": count, "first": first},
                    count / per_second + STEP_TIMEOUT,
                )
                last = first + count - 1
                reports = await ask_all(
                    swarms, [{"cmd": "window", "last": last, "timeout": plan.drain_seconds}] * len(swarms), STEP_TIMEOUT
                )
                cpu = process_cpu_seconds(server.pid) - cpu
                redis_cpu = await redis_cpu_seconds(redis) - redis_cpu
                wall = time.perf_counter() - clock
                received = sum(r["received"] for r in reports)
                lost = sum(r["lost"] for r in reports)
                levels.append(
                    {
                        "offered_deliveries_per_s": rate,
                        "messages_per_s": round(per_second, 3),
                        "published": count,
                        "publish_errors": published["errors"],
                        "publisher_behind_ms": published["behind_ms"],
                        "expected": sum(r["expected"] for r in reports),
                        "received": received,
                        "lost": lost,
                        "duplicates": sum(r["duplicates"] for r in reports),
                        "closed": sum(r["closed"] for r in reports),
                        "deliveries_per_s": round(received / max(published["seconds"], count / per_second), 1),
                        **latency(reports),
                        "cpu_us_per_delivery": round(cpu / received * 1e6, 2) if received else None,
                        "server_cpu_share": round(cpu / wall, 3),
                        "redis_cpu_us_per_delivery": round(redis_cpu / received * 1e6, 2) if received else None,
                        "loadgen_cpu_us_per_delivery": (
                            round(sum(r["cpu_seconds"] for r in reports) / received * 1e6, 2) if received else None
                        ),
                    }
                )
                first = last + 1
                if lost:
                    await asyncio.sleep(plan.settle_seconds)  # let a saturated server finish before the next level
        passing = [
            lvl["offered_deliveries_per_s"]
            for lvl in levels
            if lvl["lost"] == 0 and lvl["p99_ms"] is not None and lvl["p99_ms"] <= P99_GOAL_MS
        ]
        return {
            "subscribers": opened["ready"],
            "connect_failed": opened["failed"],
            "connect_seconds": opened["seconds"],
            "levels": levels,
            "max_rate_p99_50ms": max(passing, default=0),
        }

    async def chat(self, system: str) -> dict[str, Any]:
        plan = self.plan
        pairs = self.audiences[system].pairs[: plan.chat_pairs]
        async with self.server(system, "chat") as server, self.swarms(system, server.port, plan.swarms) as swarms:
            shares = split(len(pairs), len(swarms))
            chunks, low = [], 0
            for share in shares:
                chunks.append(pairs[low : low + share])
                low += share
            opened = await ask_all(swarms[: len(chunks)], [{"cmd": "pairs", "pairs": c} for c in chunks], STEP_TIMEOUT)
            await asyncio.sleep(plan.settle_seconds)
            cpu = process_cpu_seconds(server.pid)
            reports = await ask_all(
                swarms[: len(chunks)], [{"cmd": "chat", "seconds": plan.chat_seconds}] * len(chunks), STEP_TIMEOUT
            )
            cpu = process_cpu_seconds(server.pid) - cpu
        messages = sum(r["messages"] for r in reports)
        return {
            "pairs": sum(r["ready"] for r in opened) // 2,
            "messages": messages,
            "messages_per_s": round(messages / plan.chat_seconds, 1),
            **latency(reports),
            "duplicates": sum(r["duplicates"] for r in reports),
            "closed": sum(r["closed"] for r in reports),
            "cpu_us_per_message": round(cpu / messages * 1e6, 2) if messages else None,
        }

    async def storm(self, system: str) -> dict[str, Any]:
        plan = self.plan
        audience = self.audiences[system]
        count = max(plan.min_messages, round(plan.storm_rate * plan.storm_seconds))
        async with (
            self.server(system, "storm") as server,
            self.swarms(system, server.port, plan.swarms) as swarms,
            self.swarms(system, server.port, 1) as publisher,
        ):
            opened = await self.open(swarms, plan.storm_clients, audience.group, audience.subscriber_token)
            await self.open(publisher, 1, audience.group, audience.publisher_token, role="p")
            await asyncio.sleep(plan.settle_seconds)
            await ask_all(swarms, [{"cmd": "reset", "first": 1}] * len(swarms), STEP_TIMEOUT)
            publishing = asyncio.create_task(
                ask(publisher[0], {"cmd": "publish", "rate": plan.storm_rate, "count": count, "first": 1}, STEP_TIMEOUT)
            )
            await asyncio.sleep(plan.storm_seconds / 3)
            storms = await ask_all(
                swarms, [{"cmd": "storm", "offline": plan.storm_offline}] * len(swarms), STEP_TIMEOUT
            )
            published = await publishing
            reports = await ask_all(
                swarms, [{"cmd": "window", "last": count, "timeout": plan.drain_seconds}] * len(swarms), STEP_TIMEOUT
            )
        return {
            "clients": opened["ready"],
            "published": count,
            "publish_errors": published["errors"],
            "resumed": sum(s["resumed"] for s in storms),
            "resume_failed": sum(s["failed"] for s in storms),
            "resume_errors": [e for s in storms for e in s["errors"]],
            "resume_seconds": max(s["seconds"] for s in storms),
            "expected": sum(r["expected"] for r in reports),
            "received": sum(r["received"] for r in reports),
            "missed": sum(r["lost"] for r in reports),
            "duplicates": sum(r["duplicates"] for r in reports),
        }

    async def run_system(self, system: str, scenarios: Sequence[str]) -> dict[str, Any]:
        result: dict[str, Any] = {"label": LABELS[system]}
        if "idle" in scenarios:
            result["idle"] = await self.idle(system)
        if "fanout" in scenarios:
            result["fanout"] = [await self.fanout(system, n, rates) for n, rates in self.plan.fanout]
        if "chat" in scenarios:
            result["chat"] = await self.chat(system)
        if "storm" in scenarios:
            result["storm"] = await self.storm(system)
        return result


# ---------------------------------------------------------------------------- audiences


async def procreche_audience(pool: Pool, pairs: int) -> Audience:
    """The demo, plus one household a chat pair (a guardian who may post, and the staff).
    Sessions are created directly: what is measured is the WebSocket, not the login."""
    await demo.seed(pool, Passwords(), PASSWORD)

    async def session(user_id: int) -> str:
        token = secrets.token_urlsafe(32)
        await pool.execute(
            "INSERT INTO sessions (token_hash, user_id, expires_at) VALUES ($1, $2, now() + interval '1 day')",
            token_digest(token),
            user_id,
        )
        await pool.execute(
            "INSERT INTO terms_acceptances (user_id, version) SELECT $1, max(version) FROM terms_versions"
            " ON CONFLICT DO NOTHING",
            user_id,
        )
        return token

    staff = await pool.fetchval("SELECT id FROM users WHERE email = 'staff@demo.test'")
    parent = await pool.fetchval("SELECT id FROM users WHERE email = 'martin@demo.test'")
    group = await pool.fetchval(
        "SELECT c.group_id FROM children c JOIN guardianships g ON g.child_id = c.id"
        " WHERE g.user_id = $1 AND c.group_id IS NOT NULL ORDER BY c.id LIMIT 1",
        parent,
    )
    structure = await pool.fetchval("SELECT structure_id FROM groups WHERE id = $1", group)
    users: list[tuple[int, int]] = []
    async with pool.acquire() as conn, conn.transaction():
        for i in range(pairs):
            user = await conn.fetchval(
                "INSERT INTO users (email, display_name) VALUES ($1, $2) RETURNING id",
                f"pair{i}@bench.test",
                f"Parent {i}",
            )
            await conn.execute(
                "INSERT INTO memberships (structure_id, user_id, role) VALUES ($1, $2, 'guardian')", structure, user
            )
            family = await conn.fetchval(
                "INSERT INTO families (structure_id, name) VALUES ($1, $2) RETURNING id", structure, f"Bench {i}"
            )
            kid = await conn.fetchval(
                "INSERT INTO children (structure_id, group_id, first_name, last_name, enrolled_on)"
                " VALUES ($1, $2, 'Enfant', $3, current_date) RETURNING id",
                structure,
                group,
                f"Bench {i}",
            )
            await conn.execute("INSERT INTO family_members (family_id, user_id) VALUES ($1, $2)", family, user)
            await conn.execute("INSERT INTO family_children (family_id, child_id) VALUES ($1, $2)", family, kid)
            await conn.execute(
                "INSERT INTO guardianships (child_id, user_id, parental_authority, may_post)"
                " VALUES ($1, $2, true, true)",
                kid,
                user,
            )
            users.append((family, user))
    staff_token = await session(staff)
    rooms = [[f"family:{family}", staff_token, await session(user)] for family, user in users]
    return Audience(f"group:{group}", staff_token, await session(parent), rooms)


def peer_audience(pairs: int) -> Audience:
    return Audience("group1", "", "", [[f"pair{i}", "", ""] for i in range(pairs)])


# ---------------------------------------------------------------------------- the run


async def measure(
    plan: Plan,
    systems: Sequence[str],
    scenarios: Sequence[str],
    database_url: str,
    redis_url: str,
    *,
    quick: bool,
) -> dict[str, Any]:
    require_local(database_url)
    require_local(redis_url)
    peers = {name: await asyncio.to_thread(install, name) for name in systems if name != "procreche"}
    name = f"procreche_compare_{secrets.token_hex(4)}"
    prefix = f"cmpbench{secrets.token_hex(4)}"
    started = datetime.now(UTC)
    clock = time.perf_counter()
    await execute_once(database_url, f'CREATE DATABASE "{name}"')
    url = with_database(database_url, name)
    results: dict[str, Any] = {}
    try:
        async with open_redis(redis_url) as redis, contextlib.AsyncExitStack() as cleanup:
            cleanup.push_async_callback(delete_prefix, redis, prefix)
            with tempfile.TemporaryDirectory(prefix="procreche-compare-") as tmp:
                work = Path(tmp)
                async with open_pool(url, max_size=4) as pool:
                    await migrate(pool)
                    env = await common.environment(redis, pool)
                    bench = Bench(plan, url, redis_url, prefix, work, peers)
                    pairs = max(plan.chat_pairs, 1)
                    bench.audiences = {
                        s: await procreche_audience(pool, pairs) if s == "procreche" else peer_audience(pairs)
                        for s in systems
                    }
                    for system in systems:
                        results[system] = await bench.run_system(system, scenarios)
                    persistence = None
                    if "procreche" in systems and "persistence" in scenarios:
                        sizes = dataclasses.replace(
                            capacity.QUICK if quick else capacity.FULL,
                            persist_rows=plan.persist_rows,
                            persist_workers=plan.persist_workers,
                        )
                        author = await common.staff_author(pool)
                        persistence = await capacity.measure_persistence(
                            redis, pool, url, redis_url, f"{prefix}w", author, sizes, work
                        )
    finally:
        await execute_once(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return {
        **run_facts("procreche against its peers (bench/compare.py)", quick, started, clock, env),
        "peer_versions": {name: installed.versions for name, installed in peers.items()},
        "plan": asdict(plan),
        "scenarios": list(scenarios),
        "systems": results,
        "persistence": persistence,
    }


def listening(url: str) -> bool:
    parts = urlsplit(url)
    with contextlib.suppress(OSError), socket.create_connection((parts.hostname or HOST, parts.port or 0), timeout=2):
        return True
    return False


async def run(
    plan: Plan,
    systems: Sequence[str],
    scenarios: Sequence[str],
    database_url: str | None,
    redis_url: str | None,
    *,
    quick: bool,
) -> dict[str, Any]:
    """With no URL given, the machine's servers on 127.0.0.1 if they answer, else embedded
    ones (the product's own, in var/bench-servers), so that `make bench` runs anywhere."""
    if database_url is None and listening(common.DEFAULT_DATABASE_URL):
        database_url = common.DEFAULT_DATABASE_URL
    if redis_url is None and listening(common.DEFAULT_REDIS_URL):
        redis_url = common.DEFAULT_REDIS_URL
    async with embedded_servers(ROOT / "var" / "bench-servers", database_url, redis_url) as (database, redis):
        return await measure(plan, systems, scenarios, database, redis, quick=quick)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.compare", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the harness, measures little")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {', '.join(SYSTEMS)}")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from {', '.join(SCENARIOS)}; the tables and the plot need them all",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default bench/results)")
    parser.add_argument("--docs", type=Path, default=None, help="docs folder to update (default: docs/ in full mode)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or None)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or None)
    args = parser.parse_args(argv)
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    scenarios = [s for s in args.scenarios.split(",") if s]
    if set(scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenarios: {', '.join(sorted(set(scenarios) - set(SCENARIOS)))}")
    plan = QUICK if args.quick else FULL
    results = asyncio.run(run(plan, systems, scenarios, args.database_url, args.redis_url, quick=args.quick))
    if scenarios != list(SCENARIOS):
        print(json.dumps(results["systems"], indent=1))
        return 0
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"compare-{results['date'][:10]}{'-quick' if args.quick else ''}.json"
    raw.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    report.publish(results, out, args.docs if args.docs is not None else (None if args.quick else DOCS))
    print(f"written to {raw}, {out / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
