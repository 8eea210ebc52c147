"""Benchmark peer: python-socketio AsyncServer + AsyncRedisManager, served by uvicorn.

Run (cwd = this folder):
    python -m uvicorn peer_socketio:app --host $BENCH_HOST --port $BENCH_PORT \
        --no-access-log --log-level warning
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import parse_qs

import socketio

ROOM_RE = re.compile(r"[A-Za-z0-9_-]+")

sio = socketio.AsyncServer(
    async_mode="asgi",
    client_manager=socketio.AsyncRedisManager(os.environ["REDIS_URL"], channel=os.environ["BENCH_PREFIX"]),
    cors_allowed_origins="*",
)
app = socketio.ASGIApp(sio)

room_of: dict[str, str] = {}


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
    rooms = parse_qs(environ.get("QUERY_STRING", "")).get("room", [])
    if not rooms or not ROOM_RE.fullmatch(rooms[0]):
        return False
    room_of[sid] = rooms[0]
    await sio.enter_room(sid, rooms[0])
    return True


@sio.event
async def disconnect(sid: str, reason: Any = None) -> None:
    room_of.pop(sid, None)


@sio.event
async def publish(sid: str, data: Any) -> None:
    room = room_of.get(sid)
    if room is not None and isinstance(data, str):
        # Goes out via Redis pub/sub; every server (this one too) delivers locally.
        await sio.emit("msg", data, room=room)
