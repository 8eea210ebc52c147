"""A persistence worker process for bench/capacity.py: `PersistenceWorker.run(burst=True)`.

`python -m bench.persist_worker --database-url URL --redis-url URL --prefix P --partitions 0-3`

Prints `{"ready": true}` once its consumer groups exist, waits for a line on stdin (so that
several workers start together), persists until its partitions' ingest streams are empty,
then prints `{"persisted": n, "seconds": s, "cpu_seconds": c}` and waits for another line
before it closes its connections (so that the bench reads PostgreSQL's CPU while the
backends still exist).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from realtime.database import open_pool
from realtime.keys import Keys
from realtime.message_store import MessageStore
from realtime.redis_client import open_redis
from realtime.settings import parse_partitions
from workers.persistence import PersistenceWorker


async def main_async(args: argparse.Namespace) -> None:
    partitions = parse_partitions(args.partitions, args.total_partitions, "--partitions")
    async with (
        open_pool(args.database_url, max_size=args.pool_size) as pool,
        open_redis(args.redis_url) as redis,
    ):
        worker = PersistenceWorker(
            redis,
            Keys(args.prefix, args.total_partitions),
            MessageStore(pool),
            batch=args.batch,
            reclaim_idle_ms=60_000,
            partitions=partitions,
        )
        await worker.ensure_groups()
        print(json.dumps({"ready": True}), flush=True)
        line = await asyncio.wait_for(asyncio.to_thread(sys.stdin.readline), args.timeout)
        if not line:
            raise RuntimeError("the bench closed stdin before the start")
        cpu, start = time.process_time(), time.perf_counter()
        await asyncio.wait_for(worker.run(burst=True), args.timeout)
        report: dict[str, Any] = {
            "persisted": worker.persisted,
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu,
        }
        print(json.dumps(report), flush=True)
        await asyncio.wait_for(asyncio.to_thread(sys.stdin.readline), args.timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.persist_worker", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--partitions", default="", help='e.g. "0-3"; empty: all')
    parser.add_argument("--total-partitions", type=int, default=8)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300.0)
    asyncio.run(main_async(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
