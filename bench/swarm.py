"""A load-generator process: a swarm of WebSocket clients of one system under test.

`python -m bench.swarm --system procreche --port P [--seed S]`

The same client code speaks to every system compared (bench/peers/README.md): procreche's
protocol (docs/protocol.md, JSON format), Socket.IO (Engine.IO v4 over a WebSocket) and
plain text WebSockets. Every message carries its own number, its send time and its
sender's role in a ~200-byte text, `"<k> <time_ns> <role> xxx…"`, so that loss, duplicates
and latency are counted the same way everywhere.

The process is driven by the harness (bench/compare.py) over its standard streams, one
JSON object per line each way:

- `{"cmd": "open", "n": 1000, "room": "group:1", "token": "…", "role": "s"}` →
  `{"ready", "failed", "errors", "seconds"}`
- `{"cmd": "pairs", "pairs": [["family:7", "token a", "token b"], …]}` → the same, two clients a pair
- `{"cmd": "reset", "first": k}`: count from message k on → `{"ok": true}`
- `{"cmd": "window", "last": k, "timeout": s}`: wait (bounded) until every client has message k
  → `{"expected", "received", "lost", "duplicates", "closed", "histogram", "cpu_seconds"}`
- `{"cmd": "publish", "rate": r, "count": n, "first": k}` (a swarm of one publisher) →
  `{"published", "acked", "errors", "seconds", "behind_ms"}`
- `{"cmd": "chat", "seconds": s}`: every pair exchanges, one message in flight each →
  `{"messages", "histogram", "seconds", "cpu_seconds"}`
- `{"cmd": "storm", "offline": s}`: every client drops its connection, waits s seconds and
  resumes → `{"resumed", "failed", "seconds"}`
- `{"cmd": "close"}` → `{"closed": n}`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.wsclient import WebSocketClient
from gateway.cli import run_loop

HOST = "127.0.0.1"
PAYLOAD_BYTES = 200
BUCKET_US = 100  # latency histogram resolution: 0.1 ms
CONNECT_CONCURRENCY = 100
CONNECT_TIMEOUT = 30.0
SUBSCRIBE_ATTEMPTS = 10  # procreche answers `unavailable` for "retry shortly" (docs/protocol.md)
ACK_TIMEOUT = 15.0
MESSAGE_FRAME = b'{"op":"message",'  # docs/protocol.md §5.1, as procreche.v1.json writes it
SOCKETIO_SYSTEMS = frozenset({"socketio_python", "socketio_node"})
PLAIN_SYSTEMS = frozenset({"channels", "websockets_relay"})
SYSTEMS = ("procreche", *sorted(SOCKETIO_SYSTEMS | PLAIN_SYSTEMS))


class Member:
    """One simulated user: what they received, across the connections they open."""

    __slots__ = ("done", "duplicates", "epoch", "last_k", "link", "role", "room", "seen", "seq", "token")

    def __init__(self, room: str, token: str, role: str) -> None:
        self.room = room
        self.token = token
        self.role = role
        self.link: Link | None = None
        self.last_k = 0
        self.seen = 0
        self.duplicates = 0
        self.seq = 0  # procreche: the last sequence number received, for resuming
        self.epoch = ""
        self.done = False


def payload(k: int, role: str, pad: bytes) -> bytes:
    head = f"{k} {time.time_ns()} {role} ".encode()
    return head + pad[: max(0, PAYLOAD_BYTES - len(head))]


class Link(WebSocketClient):
    """One connection of a member; `ready` resolves once it is in its room."""

    def __init__(self, swarm: Swarm, member: Member, path: str, subprotocol: str | None) -> None:
        super().__init__(HOST, swarm.port, path, subprotocol)
        self.swarm = swarm
        self.member = member
        self.ready: asyncio.Future[None] = swarm.loop.create_future()
        self.is_open = False

    def joined(self) -> None:
        self.is_open = True
        if not self.ready.done():
            self.ready.set_result(None)

    def closed(self, code: int | None, error: str | None) -> None:
        self.is_open = False
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(error or f"closed with {code}"))
        self.swarm.lost_link(self)

    def publish(self, data: bytes) -> None:
        raise NotImplementedError


class PlainLink(Link):
    """Channels and the bare relay: the room is the path; every text frame is a message."""

    def opened(self) -> None:
        self.joined()

    def message(self, data: bytes) -> None:
        self.swarm.received(self.member, data)

    def publish(self, data: bytes) -> None:
        self.send_text(data)


class SocketIOLink(Link):
    """Engine.IO v4 packets: 0 open, 2 ping, 3 pong, 4 message; Socket.IO 0 connect, 2 event."""

    EVENT = b'42["msg","'

    def message(self, data: bytes) -> None:
        if data.startswith(self.EVENT):
            self.swarm.received(self.member, data[len(self.EVENT) : -2])
        elif data == b"2":
            self.send_text(b"3")
        elif data.startswith(b"0"):
            self.send_text(b"40")
        elif data.startswith(b"40"):
            self.joined()
        elif data.startswith(b"44") or data.startswith(b"41"):
            self.close()

    def publish(self, data: bytes) -> None:
        self.send_text(b'42["publish","' + data + b'"]')


class ProcrecheLink(Link):
    """auth, then subscribe (with `since` and `epoch` when resuming), then messages."""

    def __init__(self, swarm: Swarm, member: Member, path: str, subprotocol: str | None) -> None:
        super().__init__(swarm, member, path, subprotocol)
        self.rid = 100
        self.attempts = 0

    def opened(self) -> None:
        self.send_json({"op": "auth", "rid": 1, "token": self.member.token})

    def send_json(self, frame: dict[str, Any]) -> None:
        self.send_text(json.dumps(frame, separators=(",", ":")).encode())

    def subscribe(self) -> None:
        frame: dict[str, Any] = {"op": "subscribe", "rid": 2, "channel": self.member.room}
        if self.member.seq:
            frame |= {"since": self.member.seq, "epoch": self.member.epoch}
        self.send_json(frame)

    def message(self, data: bytes) -> None:
        if data.startswith(MESSAGE_FRAME):
            # Read the two fields needed without decoding the whole frame, as the other
            # systems' clients do: the load generator's CPU is taken from the server's.
            start = data.index(b'"seq":') + 6
            self.member.seq = int(data[start : data.index(b",", start)])
            start = data.index(b'"text":"') + 8
            self.swarm.received(self.member, data[start : data.index(b'"', start)])
            return
        frame = json.loads(data)
        if frame.get("op") == "reply":
            self.reply(frame)

    def reply(self, frame: dict[str, Any]) -> None:
        rid = frame.get("rid")
        ok = bool(frame.get("ok"))
        error = frame.get("error") or {}
        if rid == 1:
            if not ok:
                self.refused(f"auth: {error}")
            elif self.member.role == "p":
                self.joined()  # the publisher needs no subscription
            else:
                self.subscribe()
        elif rid == 2:
            if ok:
                self.member.epoch = str(frame.get("epoch") or "")
                self.joined()
            elif error.get("code") == "unavailable" and self.attempts < SUBSCRIBE_ATTEMPTS:
                self.attempts += 1
                self.swarm.retries += 1
                self.swarm.loop.call_later(0.2 * self.attempts, self.subscribe)
            else:
                self.refused(f"subscribe: {error}")
        else:
            self.swarm.acked(ok, error)

    def refused(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        self.close()

    def publish(self, data: bytes) -> None:
        self.rid += 1
        body = {"kind": "text", "text": data.decode()}
        self.send_json(
            {"op": "publish", "rid": self.rid, "channel": self.member.room, "msg_id": str(uuid.uuid4()), "body": body}
        )


def link_factory(system: str) -> Callable[[Swarm, Member], Link]:
    if system == "procreche":
        return lambda s, m: ProcrecheLink(s, m, "/ws", "procreche.v1.json")
    if system in SOCKETIO_SYSTEMS:
        return lambda s, m: SocketIOLink(s, m, f"/socket.io/?EIO=4&transport=websocket&room={m.room}", None)
    if system in PLAIN_SYSTEMS:
        return lambda s, m: PlainLink(s, m, f"/ws/{m.room}", None)
    raise SystemExit(f"unknown system {system!r}; one of {', '.join(SYSTEMS)}")


class Swarm:
    def __init__(self, system: str, port: int, seed: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.port = port
        self.make_link = link_factory(system)
        self.random = random.Random(seed)
        self.pad = bytes(self.random.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(PAYLOAD_BYTES))
        self.members: list[Member] = []
        self.histogram: Counter[int] = Counter()
        self.first = 1
        self.last: int | None = None
        self.waiting = 0
        self.all_done = asyncio.Event()
        self.chatting = False
        self.chat_messages = 0
        self.acks = 0
        self.ack_target = 0
        self.all_acked = asyncio.Event()
        self.errors: Counter[str] = Counter()
        self.retries = 0
        self.closed_links = 0
        self.cpu_mark = time.process_time()

    # ------------------------------------------------------------------ receiving

    def received(self, member: Member, data: bytes) -> None:
        k_raw, t_raw, role_raw, _ = data.split(b" ", 3)
        role = role_raw.decode()
        if role == member.role:
            return  # its own message, echoed to the whole room
        k = int(k_raw)
        if k <= member.last_k:
            member.duplicates += 1
            return
        member.last_k = k
        if k >= self.first:  # a straggler of an earlier window counts in neither
            member.seen += 1
            self.histogram[(time.time_ns() - int(t_raw)) // 1000 // BUCKET_US] += 1
        if self.chatting and member.link is not None:
            self.chat_messages += 1
            # a answers b's k with k + 1, b echoes a's k: one message in flight per pair.
            member.link.publish(payload(k + 1 if member.role == "a" else k, member.role, self.pad))
        last = self.last
        if last is not None and k >= last and not member.done:
            self.finished(member)

    def finished(self, member: Member) -> None:
        member.done = True
        self.waiting -= 1
        if self.waiting <= 0:
            self.all_done.set()

    def lost_link(self, link: Link) -> None:
        member = link.member
        if member.link is link:
            self.closed_links += 1
            if self.last is not None and not member.done:
                self.finished(member)

    def acked(self, ok: bool, error: dict[str, Any]) -> None:
        if ok:
            self.acks += 1
        else:
            self.errors[str(error.get("code"))] += 1
        if self.acks + sum(self.errors.values()) >= self.ack_target:
            self.all_acked.set()

    # ------------------------------------------------------------------ connecting

    async def connect(self, members: list[Member]) -> dict[str, Any]:
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
        errors: Counter[str] = Counter()
        start = time.perf_counter()

        async def one(member: Member) -> bool:
            async with limit:
                link = self.make_link(self, member)
                member.link = link
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        await self.loop.create_connection(lambda: link, HOST, self.port)
                        await link.ready
                    return True
                except (OSError, TimeoutError) as exc:
                    errors[type(exc).__name__ + ": " + str(exc)[:200]] += 1
                    link.abort()
                    member.link = None
                    return False

        results = await asyncio.gather(*(one(m) for m in members))
        return {
            "ready": sum(results),
            "failed": len(results) - sum(results),
            "errors": dict(errors.most_common(5)),
            "seconds": round(time.perf_counter() - start, 3),
        }

    async def open(self, n: int, room: str, token: str, role: str) -> dict[str, Any]:
        members = [Member(room, token, role) for _ in range(n)]
        self.members += members
        return await self.connect(members)

    async def pairs(self, pairs: list[list[str]]) -> dict[str, Any]:
        members: list[Member] = []
        for room, token_a, token_b in pairs:
            members += (Member(room, token_a, "a"), Member(room, token_b, "b"))
        self.members += members
        return await self.connect(members)

    # ------------------------------------------------------------------ commands

    def reset(self, first: int) -> dict[str, Any]:
        self.first = first
        self.last = None
        self.histogram = Counter()
        self.all_done = asyncio.Event()
        for member in self.members:
            member.seen = 0
            member.duplicates = 0
            member.done = False
        self.closed_links = 0
        self.cpu_mark = time.process_time()
        return {"ok": True}

    async def window(self, last: int, timeout: float) -> dict[str, Any]:
        self.last = last
        self.waiting = 0
        for member in self.members:
            if member.last_k >= last or member.link is None or not member.link.is_open:
                member.done = True
            else:
                self.waiting += 1
        if self.waiting == 0:
            self.all_done.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_done.wait(), timeout)
        span = last - self.first + 1
        expected = span * len(self.members)
        received = sum(min(m.seen, span) for m in self.members)
        return {
            "members": len(self.members),
            "expected": expected,
            "received": received,
            "lost": expected - received,
            "duplicates": sum(m.duplicates for m in self.members),
            "closed": self.closed_links,
            "histogram": {str(k): v for k, v in sorted(self.histogram.items())},
            "cpu_seconds": round(time.process_time() - self.cpu_mark, 3),
        }

    async def publish(self, rate: float, count: int, first: int) -> dict[str, Any]:
        """Open loop: message i leaves at start + i / rate, whatever the answers."""
        member = self.members[0]
        assert member.link is not None
        self.acks = 0
        self.errors = Counter()
        self.ack_target = count
        self.all_acked = asyncio.Event()
        interval = 1.0 / rate
        start = self.loop.time()
        behind = 0.0
        for i in range(count):
            delay = start + i * interval - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                behind = max(behind, -delay)
            member.link.publish(payload(first + i, member.role, self.pad))
        seconds = self.loop.time() - start
        if isinstance(member.link, ProcrecheLink) and self.acks + sum(self.errors.values()) < count:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_acked.wait(), ACK_TIMEOUT)
        return {
            "published": count,
            "acked": self.acks if isinstance(member.link, ProcrecheLink) else None,
            "errors": dict(self.errors),
            "seconds": round(seconds, 3),
            "behind_ms": round(behind * 1000, 1),
        }

    async def chat(self, seconds: float) -> dict[str, Any]:
        self.reset(1)
        self.chat_messages = 0
        self.chatting = True
        start = time.perf_counter()
        for member in self.members:
            if member.role == "a" and member.link is not None:
                member.link.publish(payload(member.last_k + 1, "a", self.pad))
        await asyncio.sleep(seconds)
        self.chatting = False
        elapsed = time.perf_counter() - start
        messages = self.chat_messages
        await asyncio.sleep(1.0)  # let the messages in flight land before the next command
        return {
            "pairs": len(self.members) // 2,
            "messages": messages,
            "seconds": round(elapsed, 3),
            "messages_per_s": round(messages / elapsed, 1),
            "histogram": {str(k): v for k, v in sorted(self.histogram.items())},
            "duplicates": sum(m.duplicates for m in self.members),
            "closed": self.closed_links,
            "cpu_seconds": round(time.process_time() - self.cpu_mark, 3),
        }

    async def storm(self, offline: float) -> dict[str, Any]:
        """Every connection dropped at once, as when a building's Wi-Fi restarts, offline for
        `offline` seconds, then resumed; the time counts from the first reconnection."""
        for member in self.members:
            if member.link is not None:
                old, member.link = member.link, None
                old.abort()
        await asyncio.sleep(offline)
        start = time.perf_counter()
        result = await self.connect(self.members)
        result["resumed"] = result.pop("ready")
        result["seconds"] = round(time.perf_counter() - start, 3)
        return result

    async def close(self) -> dict[str, Any]:
        closed = 0
        for member in self.members:
            if member.link is not None and member.link.is_open:
                member.link.close()
                closed += 1
        self.members = []
        await asyncio.sleep(0.5)
        return {"closed": closed}

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        match command.get("cmd"):
            case "open":
                token, role = str(command.get("token", "")), str(command.get("role", "s"))
                return await self.open(int(command["n"]), str(command["room"]), token, role)
            case "pairs":
                return await self.pairs(command["pairs"])
            case "reset":
                return self.reset(int(command["first"]))
            case "window":
                return await self.window(int(command["last"]), float(command["timeout"]))
            case "publish":
                return await self.publish(float(command["rate"]), int(command["count"]), int(command["first"]))
            case "chat":
                return await self.chat(float(command["seconds"]))
            case "storm":
                return await self.storm(float(command["offline"]))
            case "close":
                return await self.close()
        raise SystemExit(f"bench.swarm: unknown command {command!r}")


async def main_async(args: argparse.Namespace) -> None:
    swarm = Swarm(args.system, args.port, args.seed)
    while line := await asyncio.to_thread(sys.stdin.readline):
        answer = await swarm.handle(json.loads(line))
        answer["retries"] = swarm.retries
        print(json.dumps(answer), flush=True)
    await swarm.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.swarm", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--system", required=True, choices=SYSTEMS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    # On uvloop, as the gateway: a cheaper client leaves more of the machine to the server measured.
    run_loop(main_async(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
