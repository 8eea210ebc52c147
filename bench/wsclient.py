"""A minimal WebSocket client (RFC 6455) on an asyncio Protocol, for load generation only.

The load generator shares the machine with the server it measures: every microsecond it
spends on a delivery is taken from the server under test. A `websockets` client costs
about 27 µs of CPU per received message (bench/results/capacity-2026-11-25.json); this one
parses a frame in a few, and costs the same for every system compared. It handles what
the servers under test send — unmasked text and binary frames, fragments, ping, close —
and sends masked frames, as a client must.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from typing import cast

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEADER = 16 * 1024
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class HandshakeError(Exception):
    pass


def mask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return payload
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def client_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = os.urandom(4)
    return head + key + mask(payload, key)


class WebSocketClient(asyncio.Protocol):
    """Subclasses implement `opened`, `message` and `closed`; `send_text` sends."""

    def __init__(self, host: str, port: int, path: str, subprotocol: str | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self._request_line = (host, port, path, subprotocol)
        self._key = base64.b64encode(os.urandom(16))
        self._buffer = bytearray()
        self._upgraded = False
        self._fragments: list[bytes] = []
        self.close_code: int | None = None

    # ------------------------------------------------------------------ subclass hooks

    def opened(self) -> None:
        """The handshake succeeded."""

    def message(self, data: bytes) -> None:
        """One complete text or binary message."""

    def closed(self, code: int | None, error: str | None) -> None:
        """The connection ended (close frame, error or loss)."""

    # ------------------------------------------------------------------ sending

    def send_text(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(OP_TEXT, data))

    def abort(self) -> None:
        """Drop the connection the way a phone losing its network does: no close frame."""
        if self.transport is not None:
            self.transport.abort()

    def close(self, code: int = 1000) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(OP_CLOSE, struct.pack("!H", code)))
            self.transport.close()

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport, but are one.
        self.transport = cast(asyncio.Transport, transport)
        host, port, path, subprotocol = self._request_line
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self._key.decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        if subprotocol:
            lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.closed(self.close_code, None if exc is None else repr(exc))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEADER:
                    self._fail("handshake response too long")
                return
            head = bytes(buffer[:end]).decode("latin-1")
            del buffer[: end + 4]
            if not self._check_handshake(head):
                return
            self._upgraded = True
            self.opened()
        self._frames()

    # ------------------------------------------------------------------ internals

    def _check_handshake(self, head: str) -> bool:
        status, *fields = head.split("\r\n")
        if status.split(" ", 2)[1:2] != ["101"]:
            self._fail(f"handshake refused: {status}")
            return False
        headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
        expected = base64.b64encode(hashlib.sha1(self._key + GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            self._fail("bad Sec-WebSocket-Accept")
            return False
        return True

    def _fail(self, reason: str) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.transport = None
        self.closed(None, reason)

    def _frames(self) -> None:
        buffer = self._buffer
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            length = second & 0x7F
            offset = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                (length,) = struct.unpack_from("!H", buffer, 2)
                offset = 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                (length,) = struct.unpack_from("!Q", buffer, 2)
                offset = 10
            if second & 0x80:
                self._fail("the server masked a frame")
                return
            if len(buffer) < offset + length:
                return
            payload = bytes(buffer[offset : offset + length])
            del buffer[: offset + length]
            opcode = first & 0x0F
            fin = first & 0x80
            if opcode in (OP_TEXT, OP_BINARY, OP_CONT):
                if fin and not self._fragments:
                    self.message(payload)
                else:
                    self._fragments.append(payload)
                    if fin:
                        whole = b"".join(self._fragments)
                        self._fragments.clear()
                        self.message(whole)
            elif opcode == OP_PING:
                if self.transport is not None:
                    self.transport.write(client_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                if self.transport is not None and not self.transport.is_closing():
                    self.transport.write(client_frame(OP_CLOSE, payload[:2]))
                    self.transport.close()
                return
