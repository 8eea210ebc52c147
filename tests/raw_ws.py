"""A bare WebSocket client on a raw socket, for tests that must misbehave in ways a real
client library will not (never read, never answer pings)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct


async def open_raw(
    ws_url: str, *, receive_buffer: int | None = None, subprotocol: str = "procreche.v1.json"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open `ws_url` (ws://host:port/ws) with `subprotocol` (JSON by default); returns the
    streams right after the handshake. `receive_buffer` shrinks the socket's receive window."""
    host, port = ws_url.removeprefix("ws://").split("/")[0].split(":")
    # TCP named, so that asyncio turns Nagle off: frames written back to back go out at once.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
            f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
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


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True, length: int | None = None
) -> bytes:
    """A client frame of any size, misbehaving on request: `fin` false for a fragment,
    `rsv` the three reserved bits (0–7), `masked` false for an unmasked frame, `length`
    a payload length to announce other than the payload's."""
    size = len(payload) if length is None else length
    head = bytes(((0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0x0F),))
    flag = 0x80 if masked else 0
    if size < 126:
        head += bytes((flag | size,))
    elif size < 1 << 16:
        head += bytes((flag | 126,)) + struct.pack("!H", size)
    else:
        head += bytes((flag | 127,)) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[bool, int, bytes]:
    """The next server frame (servers never mask): fin, opcode, payload."""
    head = await reader.readexactly(2)
    size = head[1] & 0x7F
    if size == 126:
        size = struct.unpack("!H", await reader.readexactly(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", await reader.readexactly(8))[0]
    return bool(head[0] & 0x80), head[0] & 0x0F, await reader.readexactly(size)


async def frames_until_close(reader: asyncio.StreamReader) -> tuple[list[tuple[int, bytes]], int | None]:
    """Every frame (opcode, payload) the server sends before its close frame, and the close
    code (None if the connection ended without a close frame)."""
    frames: list[tuple[int, bytes]] = []
    while True:
        try:
            _, opcode, payload = await read_frame(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return frames, None
        if opcode == 0x8:
            return frames, struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        frames.append((opcode, payload))
