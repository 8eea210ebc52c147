"""uvicorn's sans-I/O WebSocket protocol, extended with a direct write path for fan-out.

DESIGN.md measured the ways to hand one message to 1,000 connections: awaiting an ASGI
send per connection costs 1.25× a bare `websockets` broadcast (and a paused client stalls
the loop); writing the pre-built frame to each connection's transport 0.8–0.9×. This
protocol keeps uvicorn (one port, one process for HTTP and WebSocket) and exposes, through
the ASGI scope extension `procreche.sink`, a `Sink` that writes pre-built frames straight
to the transport, reports its write buffer, and closes the connection synchronously.

It relies on uvicorn's `WebSocketsSansIOProtocol` attributes (`transport`, `conn`,
`queue`, `close_sent`); pyproject.toml pins the uvicorn range it is tested with.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

SINK_EXTENSION = "procreche.sink"


class TransportSink:
    """The gateway's handle on one connection's outbound side. Never awaits."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: FanoutWebSocketProtocol) -> None:
        self._protocol = protocol

    def write(self, frame: bytes) -> None:
        p = self._protocol
        if not p.close_sent and not p.transport.is_closing():
            p.transport.write(frame)

    def buffered(self) -> int:
        return self._protocol.transport.get_write_buffer_size()

    def close(self, code: int, reason: str = "") -> None:
        p = self._protocol
        if p.close_sent or p.transport.is_closing():
            return
        p.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        p.conn.send_close(code, reason)
        if p.buffered_too_much():
            # The peer is not reading: a close frame queued behind megabytes would never
            # reach it. Drop the connection now.
            p.transport.abort()
        else:
            p.transport.write(b"".join(p.conn.data_to_send()))
            p.close_timer = p.loop.call_later(p.close_timeout, p.transport.close)
        p.close_sent = True
        if p.read_paused:
            p.read_paused = False
            p.transport.resume_reading()


class FanoutWebSocketProtocol(WebSocketsSansIOProtocol):
    abort_above = 16 * 1024 * 1024

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            # The ASGI task is created but has not run yet: the scope can still be extended.
            scope["extensions"][SINK_EXTENSION] = TransportSink(self)

    async def send(self, message: Any) -> None:
        await super().send(message)
        # A denial response (HTTP answer to the handshake) completes the handshake too;
        # uvicorn would otherwise log "returned without completing handshake".
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True

    def buffered_too_much(self) -> bool:
        return self.transport.get_write_buffer_size() > self.abort_above
