"""WebSocket framing of server frames, done once per payload and shared by every recipient.

Server-to-client frames are never masked and we negotiate no extension, so the bytes of a
frame do not depend on the connection: the hub builds them once per message and format.
"""

from __future__ import annotations

import struct


def ws_frame(payload: bytes, *, binary: bool) -> bytes:
    opcode = 0x82 if binary else 0x81  # FIN + binary / text
    size = len(payload)
    if size < 126:
        return bytes((opcode, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", opcode, 126, size) + payload
    return struct.pack("!BBQ", opcode, 127, size) + payload
