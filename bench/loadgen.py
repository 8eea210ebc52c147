"""A load generator process for bench/capacity.py: N subscribed WebSocket connections.

`python -m bench.loadgen --url ws://127.0.0.1:P/ws --token T --channel family:1 --connections 250`

It speaks on its standard streams, one JSON object per line:
1. connects, authenticates and subscribes every connection, then prints `{"ready": n, "head": seq}`;
2. reads one line `{"first": F, "last": L}` (the sequences the bench published) from stdin;
3. waits (bounded) until every connection has received seq L, then prints its report:
   messages received in [F, L], lost, duplicates, closed connections, a latency histogram
   (publish time embedded in the text, in 0.1 ms buckets) and its own CPU seconds since
   it was ready.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from realtime.codec import JSON_SUBPROTOCOL

CONNECT_CONCURRENCY = 50
REPLY_TIMEOUT = 20.0
SUBSCRIBE_ATTEMPTS = 5  # `unavailable` means "retry shortly" (docs/protocol.md); counted in the report
BUCKET_US = 100  # latency histogram resolution: 0.1 ms


@dataclass
class Tally:
    """What one connection received of the published range."""

    first: int = 0
    last: int = 0
    seen: int = 0
    latest: int = 0
    duplicates: int = 0
    closed: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Shared:
    histogram: Counter[int] = field(default_factory=Counter)
    window: tuple[int, int] | None = None


def latency_bucket(text: str, now_ns: int) -> int:
    """The bucket of a message whose text starts with its publish time in ns."""
    sent = int(text.split(" ", 1)[0])
    return max(0, (now_ns - sent) // 1000) // BUCKET_US


class Refused(Exception):
    def __init__(self, op: str, error: dict[str, Any]) -> None:
        super().__init__(f"{op} refused: {error}")
        self.code = str(error.get("code"))


async def _request(ws: ClientConnection, frame: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(frame))
    async with asyncio.timeout(REPLY_TIMEOUT):
        while True:
            reply: dict[str, Any] = json.loads(await ws.recv())
            if reply.get("op") == "reply" and reply.get("rid") == frame["rid"]:
                if not reply.get("ok"):
                    raise Refused(frame["op"], reply.get("error") or {})
                return reply


async def _open(url: str, token: str, channel: str, retries: list[str]) -> tuple[ClientConnection, int]:
    ws = await connect(
        url,
        subprotocols=[Subprotocol(JSON_SUBPROTOCOL)],
        open_timeout=REPLY_TIMEOUT,
        compression=None,
        max_size=None,
        ping_interval=None,
    )
    await _request(ws, {"op": "auth", "rid": 1, "token": token})
    for attempt in range(SUBSCRIBE_ATTEMPTS):
        try:
            reply = await _request(ws, {"op": "subscribe", "rid": 2 + attempt, "channel": channel})
            return ws, int(reply["seq"])
        except Refused as exc:
            if exc.code != "unavailable" or attempt == SUBSCRIBE_ATTEMPTS - 1:
                raise
            retries.append(str(exc))
            await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


async def _receive(ws: ClientConnection, tally: Tally, shared: Shared) -> None:
    histogram = shared.histogram
    try:
        async for data in ws:
            frame = json.loads(data)
            if frame.get("op") != "message":
                continue
            seq = frame["seq"]
            if seq <= tally.latest:
                tally.duplicates += 1
                continue
            tally.latest = seq
            histogram[latency_bucket(frame["body"]["text"], time.time_ns())] += 1
            window = shared.window
            if window is None or window[0] <= seq <= window[1]:
                tally.seen += 1
            if window is not None and seq >= window[1]:
                tally.done.set()
    except ConnectionClosed as exc:
        tally.closed = f"{exc.rcvd.code if exc.rcvd else 'none'}"
    finally:
        tally.done.set()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    shared = Shared()
    limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
    heads: list[int] = []
    retries: list[str] = []

    async def open_one() -> ClientConnection:
        async with limit:
            ws, head = await _open(args.url, args.token, args.channel, retries)
            heads.append(head)
            return ws

    sockets = await asyncio.gather(*(open_one() for _ in range(args.connections)))
    tallies = [Tally() for _ in sockets]
    readers = [asyncio.create_task(_receive(ws, t, shared)) for ws, t in zip(sockets, tallies, strict=True)]
    try:
        cpu_start = time.process_time()
        print(json.dumps({"ready": len(sockets), "head": max(heads, default=0)}), flush=True)
        line = await asyncio.wait_for(asyncio.to_thread(sys.stdin.readline), args.wait_timeout)
        if not line:
            raise RuntimeError("the bench closed stdin before sending the published range")
        command = json.loads(line)
        first, last = int(command["first"]), int(command["last"])
        shared.window = (first, last)
        for t in tallies:
            # Count again what arrived before the window was known.
            if t.latest >= last:
                t.done.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(t.done.wait() for t in tallies)), args.drain_timeout)
        expected = (last - first + 1) * len(tallies)
        received = sum(min(t.seen, last - first + 1) for t in tallies)
        usage = time.process_time() - cpu_start
        return {
            "connections": len(tallies),
            "expected": expected,
            "received": received,
            "lost": expected - received,
            "duplicates": sum(t.duplicates for t in tallies),
            "closed": sum(1 for t in tallies if t.closed),
            "subscribe_retries": len(retries),
            "subscribe_retry_errors": sorted(set(retries)),
            "histogram": {str(k): v for k, v in sorted(shared.histogram.items())},
            "cpu_seconds": usage,
        }
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.gather(*(_close(ws) for ws in sockets), return_exceptions=True)


async def _close(ws: ClientConnection) -> None:
    with contextlib.suppress(WebSocketException, OSError, TimeoutError):
        async with asyncio.timeout(5):
            await ws.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.loadgen", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--wait-timeout", type=float, default=600.0, help="for the published range (s)")
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="for the last message to arrive (s)")
    report = asyncio.run(main_async(parser.parse_args(argv)))
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
