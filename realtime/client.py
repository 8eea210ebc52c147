"""A procreche WebSocket client, written from docs/protocol.md: used by tests and bench.

async with Client.connect(url, token) as client:
    await client.subscribe("family:1", since=0)
    await client.publish("family:1", "Bonjour")
    frame = await client.next_push()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from realtime.codec import CODECS, JSON_SUBPROTOCOL, Codec

PUSH_QUEUE = 10_000
TIMEOUT = 10.0


class ReplyError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Client:
    def __init__(self, ws: ClientConnection, codec: Codec) -> None:
        self.ws = ws
        self.codec = codec
        self.pushes: asyncio.Queue[dict[str, Any]] = asyncio.Queue(PUSH_QUEUE)
        self._rids = itertools.count(1)
        self._waiting: dict[object, asyncio.Future[dict[str, Any]]] = {}
        self.user: dict[str, Any] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        url: str,
        token: str | None = None,
        *,
        subprotocol: str = JSON_SUBPROTOCOL,
        origin: str | None = None,
    ) -> AsyncIterator[Client]:
        codec = CODECS[subprotocol]
        headers = {"Origin": origin} if origin else None
        async with connect(
            url,
            subprotocols=[Subprotocol(subprotocol)],
            open_timeout=TIMEOUT,
            compression=None,
            additional_headers=headers,
            max_size=None,
        ) as ws:
            client = cls(ws, codec)
            reader = asyncio.create_task(client._read())
            try:
                if token is not None:
                    reply = await client.request("auth", token=token)
                    client.user = reply["user"]
                yield client
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    async def _read(self) -> None:
        try:
            async for data in self.ws:
                frame = self.codec.decode(data)
                assert isinstance(frame, dict)
                waiter = self._waiting.pop(frame.get("rid"), None) if frame.get("op") == "reply" else None
                if waiter is not None and not waiter.done():
                    waiter.set_result(frame)
                else:
                    # Pushes, and replies to no request of ours (a frame too broken to carry a rid).
                    await self.pushes.put(frame)
        except ConnectionClosed:
            pass
        finally:
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError("connection closed"))

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send(data)

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a request and return its successful reply; raise ReplyError otherwise."""
        rid = next(self._rids)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = waiter
        payload = self.codec.encode({"op": op, "rid": rid, **fields})
        await self.ws.send(payload if self.codec.binary else payload.decode())
        reply = await asyncio.wait_for(waiter, TIMEOUT)
        if not reply["ok"]:
            raise ReplyError(reply["error"]["code"], reply["error"]["message"])
        return reply

    async def subscribe(
        self, channel: str, since: int | None = None, epoch: str | None = None, presence: bool = False
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {"channel": channel}
        if presence:
            fields["presence"] = True
        if since is not None:
            fields["since"] = since
        if epoch is not None:
            fields["epoch"] = epoch
        return await self.request("subscribe", **fields)

    async def publish(
        self, channel: str, text: str, msg_id: str | None = None, children: list[int] | None = None
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {"children": children} if children else {}
        return await self.request(
            "publish",
            channel=channel,
            msg_id=msg_id or str(uuid.uuid4()),
            body={"kind": "text", "text": text},
            **fields,
        )

    async def next_push(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        return await asyncio.wait_for(self.pushes.get(), timeout)

    async def pushes_until(self, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        return [await self.next_push(timeout) for _ in range(count)]
