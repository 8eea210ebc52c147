"""Benchmark peer (the ceiling): bare `websockets` server relaying Redis pub/sub.

Run (cwd = this folder):
    python peer_relay.py
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from http import HTTPStatus

import redis.asyncio as aioredis
import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

HOST = os.environ["BENCH_HOST"]
PORT = int(os.environ["BENCH_PORT"])
REDIS_URL = os.environ["REDIS_URL"]
PREFIX = os.environ["BENCH_PREFIX"] + ":"
PATH_RE = re.compile(r"/ws/([A-Za-z0-9_-]+)")

rooms: dict[str, set[ServerConnection]] = {}


def room_of(request: Request) -> str | None:
    match = PATH_RE.fullmatch(request.path.partition("?")[0])
    return match.group(1) if match else None


def process_request(ws: ServerConnection, request: Request) -> Response | None:
    if room_of(request) is None:
        return ws.respond(HTTPStatus.NOT_FOUND, "not found\n")
    return None


async def main() -> None:
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    pubsub = client.pubsub()
    # Take the pub/sub connection now so the reader can block on it before
    # the first SUBSCRIBE (redis-py refuses to read from an unset connection).
    await pubsub.connect()  # type: ignore[no-untyped-call]
    lock = asyncio.Lock()

    async def reader() -> None:
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if msg is None or msg["type"] != "message":
                continue
            members = rooms.get(msg["channel"][len(PREFIX) :])
            if members:
                websockets.broadcast(members, msg["data"])

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        room = room_of(ws.request)
        assert room is not None  # process_request rejected anything else
        channel = PREFIX + room
        # Join/leave are serialized so SUBSCRIBE/UNSUBSCRIBE reach Redis in the
        # same order as membership changes (acquiring a free lock does not yield).
        async with lock:
            members = rooms.get(room)
            if members is None:
                members = rooms[room] = set()
                await pubsub.subscribe(channel)
            members.add(ws)
        try:
            async for text in ws:
                if isinstance(text, str):
                    await client.publish(channel, text)
        finally:
            async with lock:
                members.discard(ws)
                if not members:
                    del rooms[room]
                    await pubsub.unsubscribe(channel)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    reader_task = asyncio.create_task(reader())
    stop_task = asyncio.create_task(stop.wait())
    async with serve(handler, HOST, PORT, process_request=process_request, compression=None):
        # A dead reader means nothing gets relayed any more: exit loudly.
        await asyncio.wait([reader_task, stop_task], return_when=asyncio.FIRST_COMPLETED)
    stop_task.cancel()
    if reader_task.done():
        reader_task.result()
    reader_task.cancel()
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await client.aclose()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
