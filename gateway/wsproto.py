"""uvicorn's WebSocket protocol, rebuilt for many idle connections, with a direct write path
for fan-out.

DESIGN.md measured the ways to hand one message to 1,000 connections: awaiting an ASGI
send per connection costs 1.25× a bare `websockets` broadcast (and a paused client stalls
the loop); writing the pre-built frame to each connection's transport 0.8–0.9×. This
protocol keeps uvicorn (one port, one process for HTTP and WebSocket), and the protocol
object itself is, through the ASGI scope extension `procreche.sink`, the `Sink` that writes
pre-built frames straight to the transport, reports its write buffer, and closes the
connection synchronously.

It is uvicorn's `WebSocketsSansIOProtocol` (0.54: same handshake, same ASGI events, same
frames and close codes on the wire) with what an idle connection costs taken out:

- **Detached sessions.** After `websocket.accept`, the application may `detach(pump)` and
  return: the connection then lives on with no task, no coroutine and no future. Whenever
  something was received (a message, the disconnect), the protocol runs `pump()` as a task,
  which `take()`s what is waiting, in order, and returns when nothing is left. Reading
  pauses when `INBOUND_BACKLOG` messages wait to be taken (uvicorn pauses after each).
- **One keepalive timer per server** (`Keepalive`) instead of one or two timer handles,
  each with its context, per connection. Pings and the pong deadline keep uvicorn's
  `ws_ping_interval` and `ws_ping_timeout`, to within `Keepalive.tick`.
- **No asyncio.Queue or asyncio.Event** per connection (each holds 760-byte deques: 4 KiB
  together): a list that exists only while something waits, and a future only while a
  receiver waits or writing is paused.
- **Handshake state released**: the request's headers, the scope and the 101 response are
  dropped once the handshake is done and the ASGI application has returned.
- `__slots__`, and what every connection of a server shares kept once (`_Server`).

uvicorn asks of its WebSocket protocol class only the constructor `(config, server_state,
app_state, _loop)`, asyncio's protocol methods, membership of `server_state.connections`
while connected, its tasks in `server_state.tasks`, and `shutdown()`.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import struct
import weakref
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any, Protocol, cast
from urllib.parse import unquote

from uvicorn._types import ASGI3Application, ASGIReceiveEvent, ASGISendEvent, WebSocketScope
from uvicorn.config import Config
from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.protocols.utils import (
    ClientDisconnected,
    get_client_addr,
    get_local_addr,
    get_path_with_query_string,
    get_remote_addr,
    is_ssl,
)
from uvicorn.server import ServerState
from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.version import version as websockets_version

SINK_EXTENSION = "procreche.sink"
INBOUND_BACKLOG = 16  # messages received and not yet taken by the session: then reading pauses

logger = logging.getLogger("uvicorn.error")

Pump = Callable[[], Coroutine[Any, Any, None]]


class Pinged(Protocol):
    """What the Keepalive asks of a connection."""

    ka_slot: int | None  # the Keepalive's, None while not waiting

    def keepalive_due(self) -> bool:
        """A ping is due, or the pong of the last one is late. True if a ping was sent."""
        ...


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class Keepalive:
    """The keepalive of every connection of one server, driven by one timer.

    Time is cut in slots of `tick` seconds. A connection waits in the slot of its next
    ping, or, once pinged, in the slot where the pong is late; while any connection waits,
    the timer runs once per slot and handles the slots that are due. A ping answered in
    time is followed by the next one an interval after it, as uvicorn does. A waiting
    connection costs one set entry (a timer handle and its context cost ~200 bytes, and
    uvicorn keeps one or two per connection).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float | None, timeout: float | None) -> None:
        periods = [p for p in (interval, timeout) if p is not None and p > 0]
        self.tick = min(1.0, min(periods) / 4) if periods else 1.0
        self._loop = loop
        # In slots; no pings if there is no interval, no deadline if there is no timeout.
        self._interval = max(1, math.ceil(interval / self.tick)) if interval is not None and interval > 0 else None
        self._timeout = max(1, math.ceil(timeout / self.tick)) if timeout is not None else None
        self._slots: dict[int, set[Pinged]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot = 0
        self._running: int | None = None  # the slot being handled

    def __len__(self) -> int:
        return sum(len(waiting) for waiting in self._slots.values())

    def start(self, protocol: Pinged) -> None:
        """The handshake is done: the first ping in an interval."""
        if self._interval is not None:
            self._wait(protocol, self._next_slot() + self._interval)

    def answered(self, protocol: Pinged) -> None:
        """The pong of the last ping came: the next ping an interval after that one."""
        late = protocol.ka_slot
        if late is None or self._timeout is None or self._interval is None:
            return
        self._wait(protocol, max(late - self._timeout + self._interval, self._next_slot()))

    def forget(self, protocol: Pinged) -> None:
        slot = protocol.ka_slot
        if slot is None:
            return
        protocol.ka_slot = None
        waiting = self._slots.get(slot)
        if waiting is not None:
            waiting.discard(protocol)
            if not waiting:
                del self._slots[slot]

    def _next_slot(self) -> int:
        if self._running is not None:
            return self._running + 1
        return math.floor(self._loop.time() / self.tick) + 1

    def _wait(self, protocol: Pinged, slot: int) -> None:
        self.forget(protocol)
        waiting = self._slots.get(slot)
        if waiting is None:
            self._slots[slot] = {protocol}
        else:
            waiting.add(protocol)
        protocol.ka_slot = slot
        if self._timer is None and self._running is None:
            self._schedule(math.floor(self._loop.time() / self.tick) + 1)

    def _schedule(self, slot: int) -> None:
        self._timer_slot = slot
        self._timer = self._loop.call_at(slot * self.tick, self._run)

    def _run(self) -> None:
        self._timer = None
        # The loop may run a timer a clock resolution early: never count a slot as not yet due.
        current = self._running = max(self._timer_slot, math.floor(self._loop.time() / self.tick))
        assert self._interval is not None
        after_ping = self._interval if self._timeout is None else self._timeout
        try:
            for slot in sorted(s for s in self._slots if s <= current):
                for protocol in self._slots.pop(slot):
                    protocol.ka_slot = None
                    try:
                        if protocol.keepalive_due():
                            self._wait(protocol, current + after_ping)
                    except Exception:
                        logger.exception("WebSocket keepalive failed")
        finally:
            self._running = None
        if self._slots:
            self._schedule(current + 1)


class _Server:
    """What every WebSocket connection of one uvicorn server shares."""

    __slots__ = (
        "app",
        "app_state",
        "asgi_version",
        "connections",
        "default_headers",
        "deflate",
        "keepalive",
        "loop",
        "max_size",
        "ping_interval",
        "ping_timeout",
        "root_path",
        "tasks",
    )

    def __init__(
        self, config: Config, server_state: ServerState, app_state: dict[str, Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.app: ASGI3Application = config.loaded_app
        self.app_state = app_state
        self.asgi_version = config.asgi_version
        self.root_path = config.root_path
        self.connections: set[Any] = server_state.connections
        self.tasks = server_state.tasks
        self.default_headers = server_state.default_headers
        self.deflate = config.ws_per_message_deflate
        self.max_size = config.ws_max_size
        self.loop = loop
        self.ping_interval = config.ws_ping_interval
        self.ping_timeout = config.ws_ping_timeout
        self.keepalive = Keepalive(loop, config.ws_ping_interval, config.ws_ping_timeout)

    def extensions(self) -> list[ServerExtensionFactory]:
        if not self.deflate:
            return []
        return [
            ServerPerMessageDeflateFactory(
                server_max_window_bits=12, client_max_window_bits=12, compress_settings={"memLevel": 5}
            )
        ]


_servers: weakref.WeakKeyDictionary[ServerState, _Server] = weakref.WeakKeyDictionary()


class FanoutWebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection: uvicorn's protocol, and the gateway's `Sink` on it."""

    __slots__ = (
        "_server",
        "close_sent",
        "close_timer",
        "conn",
        "disconnected",
        "ended",
        "events",
        "fragments",
        "handshake_complete",
        "initial_response",
        "ka_slot",
        "ping_payload",
        "pump",
        "read_paused",
        "response",
        "scope",
        "task",
        "text",
        "transport",
        "waiter",
        "write_waiter",
    )

    abort_above = 16 * 1024 * 1024
    close_timeout = 10.0

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        server = _servers.get(server_state)
        if server is None:
            server = _servers[server_state] = _Server(
                config, server_state, app_state, _loop or asyncio.get_running_loop()
            )
        self._server = server
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.conn = ServerProtocol(extensions=server.extensions(), max_size=server.max_size, logger=logger)
        # Handshake state, dropped once the handshake is done and the ASGI app has returned.
        self.scope: WebSocketScope | None = None
        self.response: Response | None = None
        self.initial_response: tuple[int, list[tuple[str, str]], bytes] | None = None
        self.handshake_complete = False
        self.close_sent = False
        self.disconnected = False
        self.close_timer: asyncio.TimerHandle | None = None
        self.read_paused = False
        # A future while writing is paused (None: writable).
        self.write_waiter: asyncio.Future[None] | None = None
        # Received events not taken yet (None: none); `ended` once a disconnect is among them.
        self.events: list[ASGIReceiveEvent] | None = None
        self.ended = False
        # The future a `receive()` waits on, while it waits.
        self.waiter: asyncio.Future[None] | None = None
        # The ASGI task, then the pump's task while it runs; the pump once detached.
        self.task: asyncio.Task[None] | None = None
        self.pump: Pump | None = None
        # A fragmented message being received: its fragments, and whether it is text.
        self.fragments: list[bytes] | None = None
        self.text = False
        # Keepalive: the payload of the ping awaiting its pong; the Keepalive slot.
        self.ping_payload: bytes | None = None
        self.ka_slot: int | None = None

    # The gateway's Sink: never awaits.

    def write(self, frame: bytes) -> None:
        if not self.close_sent and not self.transport.is_closing():
            self.transport.write(frame)

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()

    def buffered_too_much(self) -> bool:
        return self.transport.get_write_buffer_size() > self.abort_above

    def close(self, code: int, reason: str = "") -> None:
        if self.close_sent or self.transport.is_closing():
            return
        self._put({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        if self.buffered_too_much():
            # The peer is not reading: a close frame queued behind megabytes would never
            # reach it. Drop the connection now.
            self.transport.abort()
        else:
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_timer = self._server.loop.call_later(self.close_timeout, self.transport.close)
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def detach(self, pump: Pump) -> None:
        """Called by the ASGI application after `websocket.accept`, just before it returns:
        the connection stays open, and from then on `pump()` runs (as a task, one at a time)
        whenever received events wait; it must `take()` them until `take()` returns None."""
        self.pump = pump

    def take(self) -> ASGIReceiveEvent | None:
        """The next received event, or None if none waits (never waits)."""
        return self._pop() if self.events else None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._server.connections.add(self)
        if logger.level <= TRACE_LOG_LEVEL:
            logger.log(TRACE_LOG_LEVEL, "%sWebSocket connection made", self._prefix())

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_keepalive()
        code = 1005 if self.handshake_complete else 1006
        self._put({"type": "websocket.disconnect", "code": code})
        self._server.connections.discard(self)
        if logger.level <= TRACE_LOG_LEVEL:
            logger.log(TRACE_LOG_LEVEL, "%sWebSocket connection lost", self._prefix())
        self.handshake_complete = True
        self.disconnected = True
        # Unblock any send() awaiting writable: asyncio never calls resume_writing() on a
        # transport that is lost while paused, and the buffer will never drain now.
        self.resume_writing()
        self._cancel_close_timer()
        if exc is None:
            self.transport.close()

    def eof_received(self) -> None:
        pass

    def pause_writing(self) -> None:
        if self.write_waiter is None:
            self.write_waiter = self._server.loop.create_future()

    def resume_writing(self) -> None:
        waiter, self.write_waiter = self.write_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _cancel_close_timer(self) -> bool:
        """True if a close timer was pending."""
        timer, self.close_timer = self.close_timer, None
        if timer is None:
            return False
        timer.cancel()
        return True

    def shutdown(self) -> None:
        self.stop_keepalive()
        if self.close_sent:
            self._cancel_close_timer()
            self.transport.close()
            return
        if self.handshake_complete:
            self._put({"type": "websocket.disconnect", "code": 1012})
            self.conn.send_close(1012)
            self.transport.write(b"".join(self.conn.data_to_send()))
        else:
            self.send_500_response()
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        if self.conn.parser_exc is not None:
            self.handle_parser_exception()
            return
        self.handle_events()

    def handle_events(self) -> None:
        for event in self.conn.events_received():
            if isinstance(event, Request):
                self.handle_connect(event)
            elif not isinstance(event, Frame):
                continue  # a server receives requests and frames only
            elif event.opcode is Opcode.TEXT:
                self.handle_data(event, text=True)
            elif event.opcode is Opcode.BINARY:
                self.handle_data(event, text=False)
            elif event.opcode is Opcode.CONT:
                self.handle_cont(event)
            elif event.opcode is Opcode.PING:
                self.transport.write(b"".join(self.conn.data_to_send()))
            elif event.opcode is Opcode.PONG:
                self.handle_pong(event)
            elif event.opcode is Opcode.CLOSE:
                self.handle_close()

    # The handshake and the ASGI application

    def handle_connect(self, event: Request) -> None:
        response = self.conn.accept(event)
        if response.status_code != 101:
            self.handshake_complete = True
            self.close_sent = True
            self.conn.send_response(response)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()
            return
        self.response = response
        # websockets 17.0 documents that non-ASCII header values are encoded with
        # ISO-8859-1; earlier versions used surrogate escapes.
        if websockets_version >= "17.0":
            headers = [(key.encode("ascii"), value.encode("latin-1")) for key, value in event.headers.raw_items()]
        else:
            headers = [
                (key.encode("ascii"), value.encode("ascii", errors="surrogateescape"))
                for key, value in event.headers.raw_items()
            ]
        raw_path, _, query_string = event.path.partition("?")
        subprotocols: list[str] = []
        for header in event.headers.get_all("Sec-WebSocket-Protocol"):
            subprotocols.extend([token.strip() for token in header.split(",")])
        # websockets' handshake parser keeps the request as long as the connection: its
        # headers are in the scope now.
        event.headers.clear()
        server = self._server
        transport = self.transport
        extensions: dict[str, Any] = {"websocket.http.response": {}, SINK_EXTENSION: self}
        self.scope = {
            "type": "websocket",
            "asgi": {"version": server.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if is_ssl(transport) else "ws",
            "server": get_local_addr(transport),
            "client": get_remote_addr(transport),
            "root_path": server.root_path,
            "path": server.root_path + unquote(raw_path),
            "raw_path": server.root_path.encode("ascii") + raw_path.encode("ascii"),
            "query_string": query_string.encode("ascii"),
            "headers": headers,
            "subprotocols": subprotocols,
            "state": server.app_state.copy(),
            "extensions": extensions,
        }
        self._put({"type": "websocket.connect"})
        self._start(self.run_asgi())

    async def run_asgi(self) -> None:
        assert self.scope is not None
        try:
            result = await self._server.app(self.scope, self.receive, self.send)  # type: ignore[func-returns-value]
        except ClientDisconnected:
            self.pump = None
        except BaseException:
            self.pump = None
            logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                self.pump = None
                logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                logger.error("ASGI callable should return None, but returned '%s'.", result)
        # The handshake is over: what only it needed goes.
        self.scope = None
        self.response = None
        self.initial_response = None
        self.task = None
        if self.pump is not None:
            if self.events:
                self._start(self._pumping(self.pump))
        elif self.close_timer is None:
            self.transport.close()

    async def _pumping(self, pump: Pump) -> None:
        try:
            await pump()
        except BaseException:
            logger.exception("Exception in WebSocket session")
            self.pump = None
            if self.close_timer is None:
                self.transport.close()
        finally:
            self.task = None
            if self.ended and not self.events:
                # The pump took the disconnect: it has nothing more to do here (and the
                # session it belongs to is freed without waiting for the cycle collector).
                self.pump = None

    def _start(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = self._server.loop.create_task(coroutine)
        task.add_done_callback(self.on_task_complete)
        self._server.tasks.add(task)
        self.task = task

    def on_task_complete(self, task: asyncio.Task[None]) -> None:
        self._server.tasks.discard(task)

    def send_500_response(self) -> None:
        if self.initial_response or self.handshake_complete:
            return
        response = self.conn.reject(500, "Internal Server Error")
        self.conn.send_response(response)
        self.transport.write(b"".join(self.conn.data_to_send()))

    async def receive(self) -> ASGIReceiveEvent:
        while not self.events:
            waiter = self.waiter
            if waiter is None or waiter.done():
                waiter = self.waiter = self._server.loop.create_future()
            await waiter
        return self._pop()

    def _put(self, event: ASGIReceiveEvent) -> None:
        if self.ended:
            return  # the application has its disconnect already
        if event["type"] == "websocket.disconnect":
            self.ended = True
        if self.events is None:
            self.events = [event]
        else:
            self.events.append(event)
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # a receive() waits for it
        elif self.pump is not None and self.task is None:
            self._start(self._pumping(self.pump))

    def _pop(self) -> ASGIReceiveEvent:
        events = self.events
        assert events
        event = events.pop(0)
        if not events:
            self.events = None
            if self.read_paused:
                self.read_paused = False
                self.transport.resume_reading()
        return event

    async def send(self, message: ASGISendEvent) -> None:
        if self.write_waiter is not None:
            await asyncio.shield(self.write_waiter)

        if self.disconnected:
            raise ClientDisconnected()

        if not self.handshake_complete and self.initial_response is None:
            self._send_handshake(message)
        elif not self.close_sent and self.initial_response is None:
            try:
                if message["type"] == "websocket.send":
                    bytes_data = message.get("bytes")
                    text_data = message.get("text")
                    if bytes_data is not None:
                        self.conn.send_binary(bytes_data)
                    elif text_data is not None:
                        self.conn.send_text(text_data.encode())
                    self.transport.write(b"".join(self.conn.data_to_send()))
                elif message["type"] == "websocket.close":
                    if not self.transport.is_closing():
                        code = message.get("code", 1000)
                        reason = message.get("reason", "") or ""
                        self._put({"type": "websocket.disconnect", "code": code, "reason": reason})
                        self.conn.send_close(code, reason)
                        self.transport.write(b"".join(self.conn.data_to_send()))
                        self.close_sent = True
                        if self.read_paused:
                            self.read_paused = False
                            self.transport.resume_reading()
                        self.close_timer = self._server.loop.call_later(self.close_timeout, self.transport.close)
                else:
                    raise RuntimeError(
                        f"Expected ASGI message 'websocket.send' or 'websocket.close', but got '{message['type']}'."
                    )
            except InvalidState:
                raise ClientDisconnected() from None
        elif self.initial_response is not None:
            if message["type"] != "websocket.http.response.body":
                raise RuntimeError(f"Expected ASGI message 'websocket.http.response.body' but got '{message['type']}'.")
            status, headers, body = self.initial_response
            body += message["body"]
            self.initial_response = (status, headers, body)
            if not message.get("more_body", False):
                response_headers = Headers(headers)
                response_headers.setdefault("Date", email.utils.formatdate(usegmt=True))
                response_headers.setdefault("Connection", "close")
                response_headers.setdefault("Content-Length", str(len(body)))
                response_headers.setdefault("Content-Type", "text/plain; charset=utf-8")
                response = Response(status, _phrase(status), response_headers, body)
                self._put({"type": "websocket.disconnect", "code": 1006})
                self.conn.send_response(response)
                self.close_sent = True
                # A denial response completes the handshake too; uvicorn would otherwise
                # log "returned without completing handshake".
                self.handshake_complete = True
                self.transport.write(b"".join(self.conn.data_to_send()))
                self.transport.close()
        else:
            raise RuntimeError(f"Unexpected ASGI message '{message['type']}', after sending 'websocket.close'.")

    def _send_handshake(self, message: ASGISendEvent) -> None:
        scope = self.scope
        assert scope is not None
        if message["type"] == "websocket.accept":
            logger.info('%s - "WebSocket %s" [accepted]', get_client_addr(scope), get_path_with_query_string(scope))
            headers = [
                (name.decode("latin-1").lower(), value.decode("latin-1"))
                for name, value in (self._server.default_headers + list(message.get("headers", [])))
            ]
            accepted_subprotocol = message.get("subprotocol")
            if accepted_subprotocol:
                headers.append(("Sec-WebSocket-Protocol", accepted_subprotocol))
            response = self.response
            assert response is not None
            del response.headers["Date"]
            response.headers.update(headers)
            if not self.transport.is_closing():
                self.handshake_complete = True
                self.conn.send_response(response)
                self.transport.write(b"".join(self.conn.data_to_send()))
                self.response = None
                self.start_keepalive()
        elif message["type"] == "websocket.close":
            self._put({"type": "websocket.disconnect", "code": 1006})
            logger.info('%s - "WebSocket %s" 403', get_client_addr(scope), get_path_with_query_string(scope))
            response = self.conn.reject(HTTPStatus.FORBIDDEN, "")
            self.conn.send_response(response)
            self.close_sent = True
            self.handshake_complete = True
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()
        elif message["type"] == "websocket.http.response.start" and self.initial_response is None:
            status = message["status"]
            if not (100 <= status < 600):
                raise RuntimeError(f"Invalid HTTP status code '{status}' in response.")
            logger.info('%s - "WebSocket %s" %d', get_client_addr(scope), get_path_with_query_string(scope), status)
            headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in message.get("headers", [])]
            self.initial_response = (status, headers, b"")
        else:
            raise RuntimeError(
                "Expected ASGI message 'websocket.accept', 'websocket.close' "
                f"or 'websocket.http.response.start' but got '{message['type']}'."
            )

    # Frames received

    def handle_data(self, event: Frame, *, text: bool) -> None:
        if event.fin:
            self._received(bytes(event.data), text)
        else:
            self.fragments = [bytes(event.data)]
            self.text = text

    def handle_cont(self, event: Frame) -> None:
        if self.fragments is None:
            return  # websockets refuses a continuation that continues nothing
        self.fragments.append(bytes(event.data))
        if event.fin:
            data = b"".join(self.fragments)
            self.fragments = None
            self._received(data, self.text)

    def _received(self, data: bytes, text: bool) -> None:
        if self.close_sent:
            # The app is past `websocket.close`: discard the message rather than queueing
            # it, so reads stay active until the peer's close reply arrives.
            return
        if text:
            try:
                self._put({"type": "websocket.receive", "text": data.decode()})
            except UnicodeDecodeError:
                # The client's fault, one line per connection it costs: no error, no
                # traceback (uvicorn logs both, which lets any client flood the logs).
                logger.info("%sinvalid UTF-8 in a text message: closed with 1007", self._prefix())
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
        else:
            self._put({"type": "websocket.receive", "bytes": data})
        # uvicorn pauses reading after every message (two epoll_ctl calls per message); the
        # queue is bounded just the same if we pause only when the session falls behind.
        if not self.read_paused and self.events is not None and len(self.events) >= INBOUND_BACKLOG:
            self.read_paused = True
            self.transport.pause_reading()

    def handle_close(self) -> None:
        if self.close_sent:
            # The peer echoed our close frame: the closing handshake is complete.
            if self._cancel_close_timer():
                self.transport.close()
            return
        if not self.transport.is_closing():
            assert self.conn.close_rcvd is not None
            code = self.conn.close_rcvd.code
            reason = self.conn.close_rcvd.reason
            self._put({"type": "websocket.disconnect", "code": code, "reason": reason})
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    def handle_parser_exception(self) -> None:
        assert self.conn.close_sent is not None
        code = self.conn.close_sent.code
        reason = self.conn.close_sent.reason
        self._put({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()

    # Keepalive

    def start_keepalive(self) -> None:
        self._server.keepalive.start(self)

    def stop_keepalive(self) -> None:
        self._server.keepalive.forget(self)
        self.ping_payload = None

    def keepalive_due(self) -> bool:
        """Called by the Keepalive when a ping is due, or when the pong of the last one is
        late. True if a ping was sent."""
        if self.close_sent or self.transport.is_closing():
            self.ping_payload = None
            return False
        if self.ping_payload is not None and self._server.ping_timeout is not None:
            self.keepalive_timeout()
            return False
        # A random 4-byte payload identifies this ping: stale or unsolicited pongs are ignored.
        self.ping_payload = struct.pack("!I", random.getrandbits(32))
        self.conn.send_ping(self.ping_payload)
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    def handle_pong(self, event: Frame) -> None:
        if self.ping_payload is None or bytes(event.data) != self.ping_payload:
            return
        self.ping_payload = None
        self._server.keepalive.answered(self)

    def keepalive_timeout(self) -> None:
        self.ping_payload = None
        if logger.level <= TRACE_LOG_LEVEL:
            logger.log(TRACE_LOG_LEVEL, "%sWebSocket keepalive ping timeout", self._prefix())
        self.conn.fail(1011, "keepalive ping timeout")
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()

    def _prefix(self) -> str:
        client = get_remote_addr(self.transport) if self.transport is not None else None
        return f"{client[0]}:{client[1]} - " if client else ""
