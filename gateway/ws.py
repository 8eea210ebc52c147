"""The `/ws` endpoint: pumps WebSocket messages through the sans-I/O protocol and does
the I/O each request needs (sessions, permission facts, the bus, the hub).

Requests of one connection are handled one after the other, in order: a client's
publishes keep their order, and a subscribe's reply, backlog and switch to live happen
with no other delivery in between.

After the handshake the endpoint returns and the connection is detached
(`gateway.wsproto`): an idle session holds no task, coroutine or timer. When frames arrive,
the protocol runs `Session.pump`, which handles them in order and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.websockets import WebSocket
from uvicorn._types import WebSocketReceiveEvent

from gateway.frames import ws_frame
from gateway.hub import Outgoing, Subscriber
from gateway.maintenance import refusal as maintenance_refusal
from gateway.problems import problem
from gateway.services import Services
from gateway.wsproto import SINK_EXTENSION, FanoutWebSocketProtocol
from realtime.accounts import SessionUser
from realtime.bus import Backlog
from realtime.channels import Channel
from realtime.codec import choose
from realtime.errors import (
    BadRequest,
    CloseCode,
    Conflict,
    Forbidden,
    NotFound,
    ProcrecheError,
    Throttled,
    Unauthenticated,
    Unavailable,
    client_error,
    terms_not_accepted,
)
from realtime.messages import Author, validate_body
from realtime.origins import origin_allowed
from realtime.permissions import (
    ChannelFacts,
    Decision,
    FamilyFacts,
    Principal,
    StructureFacts,
    account,
    channel_children,
    household_only,
    may_attach_media,
    may_post_kind,
    may_publish,
    may_see_receipts,
    may_subscribe,
    may_tag,
    may_withdraw,
    sees,
    structure_of,
)
from realtime.presence import member as presence_member
from realtime.protocol import (
    Auth,
    History,
    Presence,
    Publish,
    Read,
    Receipts,
    Request,
    RequestError,
    ServerProtocol,
    State,
    Subscribe,
    Typing,
    Unsubscribe,
    Withdraw,
)
from realtime.ratelimit import TokenBucket

log = logging.getLogger("procreche.ws")

MAX_SUBSCRIPTIONS = 256
NOTHING_HIDDEN: frozenset[int] = frozenset()


def reported(exc: Exception, what: str) -> ProcrecheError:
    """What the client is told of `exc`, raised while handling `what`; logged for the
    operator when the fault is ours (with its traceback) or a backing server's (which one)."""
    error = client_error(exc)
    if error.code == "internal":
        log.exception("%s failed", what)
    elif error.retry:
        log.warning("%s answered %s: %r", what, error.code, exc.__cause__ or exc)
    return error


class Session:
    """One WebSocket connection, after the handshake."""

    __slots__ = (
        "_auth_timer",
        "_bucket",
        "_lock",
        "_loop",
        "name",
        "principal",
        "protocol",
        "services",
        "sink",
        "subscriptions",
        "token_hash",
        "user_id",
    )

    def __init__(self, services: Services, sink: FanoutWebSocketProtocol, protocol: ServerProtocol) -> None:
        self.services = services
        self.sink = sink
        self.protocol = protocol
        self.principal: Principal | None = None
        self.user_id = 0
        self.name = ""
        self.token_hash = b""
        self.subscriptions: dict[str, Subscriber] = {}
        # Requests and re-checks of rights (announced changes) never interleave.
        self._lock = asyncio.Lock()
        settings = services.settings
        self._loop = asyncio.get_running_loop()
        self._bucket = TokenBucket(settings.rate_per_second, settings.rate_burst, self._loop.time())
        self._auth_timer: asyncio.TimerHandle | None = None
        services.counts.connections += 1

    def send(self, payload: bytes) -> None:
        self.sink.write(ws_frame(payload, binary=self.protocol.codec.binary))

    def push(self, frame: dict[str, Any]) -> None:
        self.send(self.protocol.push(frame))

    def close(self, code: CloseCode, reason: str) -> None:
        self.protocol.closed()
        self.sink.close(code, reason)

    def start(self) -> None:
        """Right after the handshake: the client has `auth_timeout_seconds` to authenticate
        (checking its token is our time, not counted); the connection is handed to `pump`."""
        self._auth_timer = self._loop.call_later(self.services.settings.auth_timeout_seconds, self._auth_timed_out)
        self.sink.detach(self.pump)

    async def pump(self) -> None:
        """Handle what was received, in order, and return once nothing is left: the
        protocol calls again when more arrives. The disconnect ends the session."""
        ended = False
        try:
            while (event := self.sink.take()) is not None:
                if event["type"] == "websocket.disconnect":
                    ended = True
                    return
                if event["type"] == "websocket.receive":
                    await self._handle(event)
        except BaseException:
            ended = True
            raise
        finally:
            if ended:
                await self._end()

    async def _end(self) -> None:
        self.services.counts.connections -= 1
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        self.services.sessions.remove(self)
        await asyncio.shield(self._unsubscribe_all())

    # The LiveSession side, used by gateway.sessions when facts change.

    def channels(self) -> list[str]:
        return list(self.subscriptions)

    def revoke(self) -> None:
        """The session was logged out, or its password changed elsewhere."""
        self.close(CloseCode.AUTH_FAILED, "session_revoked")

    async def revalidate(self) -> None:
        """Check again, with fresh facts, every right this connection relies on."""
        async with self._lock:
            principal = await self.services.directory.principal(self.user_id)
            if principal is None:
                self.close(CloseCode.AUTH_FAILED, "invalid_token")
                return
            if not (verdict := account(principal)).allowed:
                terms = verdict.code == "terms_not_accepted"
                self.close(CloseCode.TERMS_NOT_ACCEPTED if terms else CloseCode.AUTH_FAILED, verdict.code)
                return
            self.principal = principal
            self.name = principal.name  # a rectified name shows on what is sent from now on
            for sub in list(self.subscriptions.values()):
                channel = Channel.parse(sub.channel)
                facts = await self._facts(channel)
                decision = may_subscribe(principal, channel, facts)
                if decision.allowed:
                    sub.hidden = self._hidden_for(facts)
                    continue
                await self._drop(sub)
                self.push({"op": "unsubscribed", "channel": sub.channel, "reason": decision.code})

    async def _handle(self, event: WebSocketReceiveEvent) -> None:
        if self.protocol.state is State.CLOSED:
            return  # we closed the connection: what the client sent meanwhile is not handled
        if not self._bucket.take(self._loop.time()):
            error = Throttled("too many requests on this connection; reconnect more slowly", code="rate_limited")
            self.send(self.protocol.error(None, error))
            self.close(CloseCode.RATE_LIMITED, error.code)
            return
        data: bytes | str | None = event.get("text")
        if data is None:
            data = event.get("bytes") or b""
        if self.protocol.state is State.AWAITING_AUTH:
            await self._authenticate(data)
        else:
            await self._serve(data)

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        if self.protocol.state is State.AWAITING_AUTH:
            self.close(CloseCode.AUTH_TIMEOUT, "no auth frame in time")

    async def _authenticate(self, data: bytes | str) -> None:
        rid = None
        try:
            request = self.protocol.receive(data)
            if not isinstance(request, Auth):
                return  # the protocol admits nothing else before it
            rid = request.rid
            if self._auth_timer is not None:
                self._auth_timer.cancel()
                self._auth_timer = None
            await self._auth(request)
        except RequestError as exc:
            self.send(self.protocol.error(exc.rid, exc.error))
        except Exception as exc:
            # As `_serve` does, and then the connection ends: it is not authenticated. Only a
            # refused token asks the client to log in again; anything else is ours.
            error = reported(exc, "auth")
            self.send(self.protocol.error(rid, error))
            refused = isinstance(error, Unauthenticated)
            self.close(CloseCode.AUTH_FAILED if refused else CloseCode.TRY_AGAIN_LATER, error.code)

    async def _auth(self, request: Auth) -> None:
        user, principal = await self._identify(request.token)
        if not principal.terms_accepted:
            error = terms_not_accepted()
            self.send(self.protocol.error(request.rid, error))
            self.close(CloseCode.TERMS_NOT_ACCEPTED, error.code)
            return
        self.principal = principal
        self.user_id = user.user_id
        self.name = principal.name
        self.token_hash = user.token_hash
        # Registered before the reply: once told it is in, the client is reachable by a
        # logout or a change of its rights.
        self.services.sessions.add(self)
        self.protocol.authenticated()
        self.send(self.protocol.reply(request.rid, user=user.public()))

    async def _identify(self, token: str) -> tuple[SessionUser, Principal]:
        user = await self.services.accounts.authenticate(token)
        principal = await self.services.directory.principal(user.user_id)
        if principal is None:
            raise Unauthenticated("invalid or expired token", code="invalid_token")
        return user, principal

    async def _serve(self, data: bytes | str) -> None:
        rid = None
        try:
            request = self.protocol.receive(data)
            rid = request.rid
            async with self._lock:
                await self._dispatch(request)
        except RequestError as exc:
            self.send(self.protocol.error(exc.rid, exc.error))
        except Exception as exc:
            self.send(self.protocol.error(rid, reported(exc, "request")))

    async def _dispatch(self, request: Request) -> None:
        if isinstance(request, Subscribe):
            await self._subscribe(request)
        elif isinstance(request, Unsubscribe):
            await self._unsubscribe(request)
        elif isinstance(request, Publish):
            try:
                await self._publish(request)
            except Exception as exc:
                self.services.counts.publish_failed(exc)
                raise
            self.services.counts.published()
        elif isinstance(request, History):
            await self._history(request)
        elif isinstance(request, Withdraw):
            await self._withdraw(request)
        elif isinstance(request, Read):
            await self._read(request)
        elif isinstance(request, Receipts):
            await self._receipts(request)
        elif isinstance(request, Typing):
            await self._typing(request)
        elif isinstance(request, Presence):
            await self._presence(request)
        else:  # the protocol admits auth only before this point
            raise TypeError(f"unexpected request {request!r}")

    async def _facts(self, channel: Channel) -> ChannelFacts:
        return await self.services.facts.channel_facts(channel)

    def _hidden_for(self, facts: ChannelFacts) -> frozenset[int]:
        assert self.principal is not None
        if structure_of(facts) in self.principal.staff_of:
            return NOTHING_HIDDEN
        # Most subscribers hide nothing: they share one empty set (216 bytes each otherwise).
        return self.principal.hidden_children() or NOTHING_HIDDEN

    @staticmethod
    def _check(decision: Decision) -> None:
        if not decision.allowed:
            raise Forbidden(decision.reason, code=decision.code, details=decision.details)

    async def _subscribe(self, request: Subscribe) -> None:
        assert self.principal is not None
        channel = request.channel
        facts = await self._facts(channel)
        self._check(may_subscribe(self.principal, channel, facts))
        if channel.name in self.subscriptions:
            raise Forbidden("already subscribed to this channel", code="already_subscribed")
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise Forbidden(f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection", code="too_many_subscriptions")
        services = self.services
        structure = structure_of(facts)
        sub = Subscriber(
            self.sink,
            self.protocol.codec,
            channel.name,
            hidden=self._hidden_for(facts),
            staff=structure in self.principal.staff_of,
            presence=request.presence,
        )
        self.subscriptions[channel.name] = sub
        services.hub.add(sub)
        try:
            await services.live.ensure(channel.name)
            if request.since is None:
                # A first visit learns its own read position; a resume (a reconnection storm
                # among them) knows it already and costs no query for it.
                backlog, read = await asyncio.gather(
                    services.bus.backlog(channel, None, services.settings.resume_limit),
                    services.receipts.position(channel.name, self.user_id),
                )
            else:
                backlog, read = await services.bus.backlog(channel, request.since, services.settings.resume_limit), None
            if request.since is not None and request.epoch is not None and request.epoch != backlog.epoch:
                # The client counted `since` in an epoch Redis lost: its position means
                # nothing now. No backlog; `recovered: false` tells it to reload (history).
                backlog = Backlog([], backlog.head, backlog.epoch, recovered=False)
        except BaseException:
            await self._drop(sub)
            raise
        # No await from here on: nothing is delivered between the reply, the backlog and live.
        self.send(
            self.protocol.reply(
                request.rid,
                channel=channel.name,
                seq=backlog.head,
                epoch=backlog.epoch,
                recovered=backlog.recovered,
                **({} if read is None else {"read": read}),
            )
        )
        for message in backlog.messages:
            if sees(self.principal, structure, message.concerns, message.withdrawn):
                self.sink.write(Outgoing.of(message).frame(self.protocol.codec))
        services.hub.go_live(sub, backlog.head)
        if isinstance(facts, FamilyFacts):
            await self._announce_presence(channel, online=True)

    async def _unsubscribe(self, request: Unsubscribe) -> None:
        sub = self.subscriptions.get(request.channel.name)
        if sub is None:
            raise Forbidden("not subscribed to this channel", code="not_subscribed")
        await self._drop(sub)
        self.send(self.protocol.reply(request.rid, channel=request.channel.name))

    async def _drop(self, sub: Subscriber) -> None:
        self.subscriptions.pop(sub.channel, None)
        if self.services.hub.remove(sub):
            await self.services.live.release(sub.channel)
        if sub.channel.startswith("family:") and not self._elsewhere_here(sub.channel):
            with contextlib.suppress(Unavailable):
                await self._announce_presence(Channel.parse(sub.channel), online=False)

    def _elsewhere_here(self, channel: str) -> bool:
        """Another connection of this user, on this gateway, still follows the channel."""
        return any(s is not self and channel in s.channels() for s in self.services.sessions.of_user(self.user_id))

    async def _unsubscribe_all(self) -> None:
        for sub in list(self.subscriptions.values()):
            await self._drop(sub)

    async def _publish(self, request: Publish) -> None:
        assert self.principal is not None
        channel = request.channel
        facts = await self._facts(channel)
        self._check(may_publish(self.principal, channel, facts))
        body = validate_body(request.body)
        self._check(may_post_kind(self.principal, facts, body))
        if request.children:
            await self._check_tags(facts, request.children)
        if body["kind"] == "media":
            body = await self._reserve_media(request, facts, body)
        author = Author(self.principal.user_id, self.principal.name)
        published = await self.services.bus.publish(channel, author, body, request.msg_id, request.children)
        if request.children:
            await self._recheck_tags(channel, published.id, request.children)
        if body["kind"] == "media":
            await self._bind_media(request, body, published.id)
        self.send(self.protocol.reply(request.rid, channel=channel.name, seq=published.seq, id=published.id))

    async def _reserve_media(self, request: Publish, facts: ChannelFacts, body: dict[str, Any]) -> dict[str, Any]:
        """The media the message shows, reserved for this publish; the body then describes
        them (type, size) so that clients lay them out before loading them."""
        assert self.principal is not None
        principal = self.principal
        confirmed = body.get("no_child_identifiable", False)
        if confirmed and request.children:
            raise BadRequest("no_child_identifiable contradicts the children tagged", code="bad_body")
        media = await self.services.media.reserve(
            body["media"],
            channel=request.channel.name,
            msg_key=request.msg_id,
            actor_id=principal.user_id,
            children=request.children,
            confirmed=confirmed,
            decide=lambda items: may_attach_media(
                principal, facts, items, tagged=bool(request.children), confirmed=confirmed
            ),
        )
        return body | {"media": [m.description() for m in media]}

    async def _bind_media(self, request: Publish, body: dict[str, Any], message_id: str) -> None:
        ids = [m["id"] for m in body["media"]]
        if not await self.services.media.bind(
            ids, channel=request.channel.name, msg_key=request.msg_id, message_id=message_id
        ):
            # Another publish of this user took a media over between our reservation and
            # now: this message must not show it.
            await self.services.bus.withdraw(request.channel, message_id, "author")
            raise Conflict(
                "a media of this message was published in another message meanwhile", code="media_already_published"
            )

    async def _history(self, request: History) -> None:
        assert self.principal is not None
        facts = await self._facts(request.channel)
        self._check(may_subscribe(self.principal, request.channel, facts))
        page = await self.services.bus.history_before(request.channel, request.before, request.limit)
        structure = structure_of(facts)
        visible = [m for m in page if sees(self.principal, structure, m.concerns, m.withdrawn)]
        self.send(
            self.protocol.reply(
                request.rid,
                channel=request.channel.name,
                messages=[m.frame() for m in visible],
                # More lies further back if the page is full and did not reach seq 1.
                more=len(page) == request.limit and page[0].seq > 1,
            )
        )

    async def _withdraw(self, request: Withdraw) -> None:
        assert self.principal is not None
        facts = await self._facts(request.channel)
        self._check(may_subscribe(self.principal, request.channel, facts))
        message = await self.services.bus.find(request.channel, request.id)
        if message is None:
            raise NotFound("no such message in this channel")
        self._check(may_withdraw(self.principal, facts, message.author.id))
        staff = structure_of(facts) in self.principal.staff_of
        await self.services.bus.withdraw(request.channel, message.id, "moderation" if staff else "author")
        self.send(self.protocol.reply(request.rid, channel=request.channel.name, id=message.id))

    def _me(self) -> dict[str, Any]:
        return {"id": self.user_id, "name": self.name}

    async def _read(self, request: Read) -> None:
        assert self.principal is not None
        facts = await self._facts(request.channel)
        self._check(may_subscribe(self.principal, request.channel, facts))
        if await self.services.receipts.mark(request.channel.name, self.user_id, request.seq):
            event = {"op": "read", "channel": request.channel.name, "user": self._me(), "seq": request.seq}
            await self.services.bus.event(
                request.channel, event, audience="a" if isinstance(facts, FamilyFacts) else "s"
            )
        self.send(self.protocol.reply(request.rid, channel=request.channel.name, seq=request.seq))

    async def _receipts(self, request: Receipts) -> None:
        assert self.principal is not None
        facts = await self._facts(request.channel)
        self._check(may_see_receipts(self.principal, request.channel, facts))
        receipts = await self.services.receipts.of(request.channel.name)
        self.send(self.protocol.reply(request.rid, channel=request.channel.name, receipts=receipts))

    async def _typing(self, request: Typing) -> None:
        assert self.principal is not None
        facts = await self._facts(request.channel)
        self._check(may_publish(self.principal, request.channel, facts))
        self._check(household_only(request.channel, facts))
        event = {"op": "typing", "channel": request.channel.name, "user": self._me()}
        await self.services.bus.event(request.channel, event, audience="a")
        self.send(self.protocol.reply(request.rid, channel=request.channel.name))

    async def _presence(self, request: Presence) -> None:
        assert self.principal is not None
        facts = await self._facts(request.channel)
        self._check(may_subscribe(self.principal, request.channel, facts))
        self._check(household_only(request.channel, facts))
        users = await self.services.presence.present(request.channel)
        self.send(self.protocol.reply(request.rid, channel=request.channel.name, users=users))

    async def _announce_presence(self, channel: Channel, online: bool) -> None:
        presence = self.services.presence
        if online:
            await presence.here({channel.name: {presence_member(self.user_id, self.name)}})
        else:
            await presence.gone(channel, self.user_id, self.name)
        event = {"op": "presence", "channel": channel.name, "user": self._me(), "online": online}
        await self.services.bus.event(channel, event, audience="p")

    async def _check_tags(self, facts: ChannelFacts, children: tuple[int, ...]) -> None:
        """Image rights, checked against consents read now (never from a cache): a revoked
        consent must stop the very next publish."""
        directory = self.services.directory
        circle = channel_children(
            facts, await directory.structure_children(facts.id) if isinstance(facts, StructureFacts) else ()
        )
        consents = await directory.consents(children)
        if len(consents) != len(children):
            raise Forbidden("a tagged child is not part of this channel's circle", code="forbidden")
        self._check(may_tag(facts, consents, circle))

    async def _recheck_tags(self, channel: Channel, message_id: str, children: tuple[int, ...]) -> None:
        """A consent revoked between our check and our write: the revocation's sweep may
        have run before the write, so withdraw the message ourselves."""
        consents = await self.services.directory.consents(children)
        if all(c.complete for c in consents):
            return
        await self.services.bus.withdraw(channel, message_id, "consent_revoked")
        raise Forbidden("publication consent was revoked meanwhile; the message was withdrawn", code="consent_missing")


async def websocket_endpoint(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    sink: FanoutWebSocketProtocol | None = websocket.scope.get("extensions", {}).get(SINK_EXTENSION)
    if sink is None:
        log.error("/ws needs gateway.wsproto.FanoutWebSocketProtocol; run the gateway with `procreche serve`")
        await websocket.close(code=CloseCode.INTERNAL)
        return
    if not origin_allowed(
        websocket.headers.get("origin"), websocket.headers.get("host"), services.settings.allowed_origins
    ):
        await websocket.send_denial_response(
            problem(403, "origin_not_allowed", "this page's origin may not open a procreche connection")
        )
        return
    if services.draining.is_set():
        await websocket.send_denial_response(problem(503, "draining", "this gateway is draining: connect to another"))
        return
    if (state := services.maintenance.current) is not None:
        await websocket.send_denial_response(maintenance_refusal(state))
        return
    codec = choose(websocket.scope.get("subprotocols", []))
    if codec is None:
        await websocket.send_denial_response(
            problem(400, "unsupported_subprotocol", "offer procreche.v1.msgpack or procreche.v1.json")
        )
        return
    await websocket.accept(subprotocol=codec.subprotocol)
    Session(services, sink, ServerProtocol(codec)).start()
