"""Benchmark peer: Django Channels + channels_redis, served by uvicorn.

Run (cwd = this folder):
    python -m uvicorn peer_channels:application --host $BENCH_HOST --port $BENCH_PORT \
        --no-access-log --log-level warning
"""

from __future__ import annotations

import os

import django
from django.conf import settings

# Settings must exist before anything from channels is imported.
settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-peer-not-secret",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    INSTALLED_APPS=["channels"],
    USE_TZ=True,
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # Default capacity/expiry on purpose: what a user would run.
            "CONFIG": {
                "hosts": [os.environ["REDIS_URL"]],
                "prefix": os.environ["BENCH_PREFIX"],
            },
        }
    },
)
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402


class RoomConsumer(AsyncWebsocketConsumer):
    room: str

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.room, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            await self.channel_layer.group_send(self.room, {"type": "relay", "text": text_data})

    async def relay(self, event: dict[str, str]) -> None:
        await self.send(text_data=event["text"])


application = ProtocolTypeRouter(
    {
        "websocket": URLRouter([re_path(r"^ws/(?P<room>[A-Za-z0-9_-]+)$", RoomConsumer.as_asgi())]),
    }
)
