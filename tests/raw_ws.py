"""A bare WebSocket client on a raw socket, for tests that must misbehave in ways a real
client library will not (never read, never answer pings)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket


async def open_raw(
    ws_url: str, *, receive_buffer: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open `ws_url` (ws://host:port/ws) with the JSON subprotocol; returns the streams
    right after the handshake. `receive_buffer` shrinks the socket's receive window."""
    host, port = ws_url.removeprefix("ws://").split("/")[0].split(":")
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: procreche.v1.json\r\n\r\n"
        ).encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    return reader, writer


def masked_text_frame(text: str) -> bytes:
    """A client text frame (clients must mask), for payloads under 126 bytes."""
    payload = text.encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    return bytes((0x81, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
