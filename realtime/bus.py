"""The message bus on Redis: the atomic publish, and reading a channel's history.

Publishing is one Lua script (realtime.keys.PUBLISH): it takes the channel's next
sequence, appends to the capped history stream and to the partition's ingest stream, and
PUBLISHes to the live channel, atomically. A missing sequence (a new channel, or Redis
lost its data) is first seeded from the highest sequence in Postgres, under a new epoch.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import msgpack
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from realtime import keys as K
from realtime.channels import Channel, ChannelKind
from realtime.errors import Unavailable
from realtime.ids import uuid7
from realtime.keys import Keys
from realtime.message_store import MessageStore
from realtime.messages import Author, Message, pack_record, unpack_record

DEDUP_TTL_SECONDS = 24 * 3600


@dataclass(frozen=True, slots=True)
class Published:
    seq: int
    id: str
    duplicate: bool
    epoch: str


@dataclass(frozen=True, slots=True)
class Backlog:
    """What a subscriber missed: `messages` in order, the channel's head, and whether the
    gap was served whole (`recovered`)."""

    messages: list[Message]
    head: int
    epoch: str
    recovered: bool


def parse_stream_seq(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


class Bus:
    def __init__(self, redis: Redis, keys: Keys, store: MessageStore, *, history_maxlen: int) -> None:
        self.redis = redis
        self.keys = keys
        self.store = store
        self.history_maxlen = history_maxlen
        self._publish = redis.register_script(K.PUBLISH)
        self._seed = redis.register_script(K.SEED)
        self._withdraw = redis.register_script(K.WITHDRAW)

    async def publish(
        self,
        channel: Channel,
        author: Author,
        body: dict[str, Any],
        msg_id: str,
        children: tuple[int, ...] = (),
    ) -> Published:
        ck = self.keys.channel(channel)
        message_id = str(uuid7())
        record = pack_record(
            id=message_id,
            channel=channel.name,
            author=author,
            body=body,
            at=datetime.now(UTC),
            msg_id=msg_id,
            children=children,
        )
        keys = [ck.seq, ck.epoch, ck.history, ck.ingest, ck.dedup(author.id, msg_id)]
        args: list[str | bytes | int] = [
            message_id,
            record,
            self.history_maxlen,
            DEDUP_TTL_SECONDS,
            ck.live,
            secrets.token_hex(8),
        ]
        try:
            try:
                result = await self._publish(keys=keys, args=args)
            except ResponseError as exc:
                if "NOSEQ" in str(exc):
                    await self._seed_sequence(channel)
                elif "STALESEQ" not in str(exc):
                    raise
                result = await self._publish(keys=keys, args=args)
        except RedisError as exc:
            raise Unavailable("the message bus is unavailable; retry with the same msg_id") from exc
        seq, mid, duplicate, epoch = result
        return Published(int(seq), _text(mid), bool(duplicate), _text(epoch))

    async def published_id(self, channel: Channel, author_id: int, msg_id: str) -> str | None:
        """The id of the message the author published with `msg_id` in the last 24 hours, as
        the publish script recorded it for retries (atomically with the publish): None if
        there is none."""
        try:
            prior = await self.redis.get(self.keys.channel(channel).dedup(author_id, msg_id))
        except RedisError as exc:
            raise Unavailable("the message bus is unavailable") from exc
        return None if prior is None else _text(prior).partition(" ")[2]

    async def _seed_sequence(self, channel: Channel) -> None:
        ck = self.keys.channel(channel)
        floor = await self.store.max_seq(channel.name)
        await self._seed(keys=[ck.seq, ck.epoch, ck.history], args=[str(floor), secrets.token_hex(8)])

    async def withdraw(self, channel: Channel, message_id: str, reason: str) -> bool:
        """Withdraw a message from guardians' view, in history and live. False if it was
        withdrawn already."""
        ck = self.keys.channel(channel)
        try:
            done = await self._withdraw(
                keys=[ck.withdrawn, ck.ingest], args=[message_id, ck.live, channel.name, reason]
            )
        except RedisError as exc:
            raise Unavailable("the message bus is unavailable") from exc
        return bool(done)

    async def is_withdrawn(self, channel: Channel, message_id: str) -> bool:
        """Whether Redis holds a withdrawal of the message (those not persisted yet among them)."""
        try:
            return bool(await self.redis.sismember(self.keys.channel(channel).withdrawn, message_id))
        except RedisError as exc:
            raise Unavailable("the message bus is unavailable") from exc

    async def event(self, channel: Channel, frame: dict[str, Any], *, audience: str) -> None:
        """A transient event to the channel's live subscribers (every gateway), not stored.
        `audience`: "a" everyone, "s" the channel's staff, "p" who asked for presence."""
        payload = b"e" + audience.encode() + b" " + msgpack.packb(frame)
        try:
            await self.redis.publish(self.keys.channel(channel).live, payload)
        except RedisError as exc:
            raise Unavailable("the message bus is unavailable") from exc

    async def tell_user(self, user_id: int, op: str, fields: dict[str, Any]) -> None:
        """An event `op` on the user's own channel, `user:<id>` (news of their uploads,
        exports, reports), for every connection of theirs."""
        channel = Channel(ChannelKind.USER, user_id)
        await self.event(channel, {"op": op, "channel": channel.name, **fields}, audience="a")

    async def tell_staff(self, structure_id: int, op: str, fields: dict[str, Any]) -> None:
        """An event `op` for the structure's staff following `structure:<id>` only."""
        channel = Channel(ChannelKind.STRUCTURE, structure_id)
        await self.event(channel, {"op": op, "channel": channel.name, **fields}, audience="s")

    async def history_tagging(self, channel: Channel, child_id: int) -> list[str]:
        """Ids of the messages in the channel's Redis history that tag the child."""
        return [m.id for m in await self._recent(channel) if child_id in m.children]

    async def backlog(self, channel: Channel, since: int | None, limit: int) -> Backlog:
        """Messages with seq > since, at most the `limit` newest: from the Redis history,
        and from Postgres for the part older than the history window. since=None: none."""
        ck = self.keys.channel(channel)
        try:
            # MULTI: the head and the history are read at the same instant, so the backlog
            # holds exactly the seqs up to the head, and live takes over right after it.
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.get(ck.seq)
                pipe.set(ck.epoch, secrets.token_hex(8), nx=True)
                pipe.get(ck.epoch)
                pipe.smembers(ck.withdrawn)
                if since is not None:
                    pipe.xrevrange(ck.history, max="+", min=f"{since + 1}-0", count=limit)
                head_raw, _, epoch_raw, withdrawn_raw, *rest = await pipe.execute()
        except RedisError as exc:
            raise Unavailable("the message bus is unavailable") from exc
        epoch = "" if epoch_raw is None else _text(epoch_raw)
        # No sequence in Redis: nothing was published since Redis started, so Postgres
        # holds the whole record.
        head = await self.store.max_seq(channel.name) if head_raw is None else int(head_raw)
        if since is None or since >= head:
            return Backlog([], head, epoch, since is None or since == head)
        messages = await self._complete(channel, rest[0], withdrawn_raw, after=since, upto=head, limit=limit)
        return Backlog(messages, head, epoch, len(messages) == head - since)

    async def history_before(self, channel: Channel, before: int, limit: int) -> list[Message]:
        """The `limit` messages just before seq `before`, oldest first (paging back)."""
        ck = self.keys.channel(channel)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.smembers(ck.withdrawn)
                pipe.xrevrange(ck.history, max=f"{before - 1}-0", min="-", count=limit)
                withdrawn_raw, entries = await pipe.execute()
        except RedisError as exc:
            raise Unavailable("the message bus is unavailable") from exc
        return await self._complete(channel, entries, withdrawn_raw, after=0, upto=before - 1, limit=limit)

    async def find(self, channel: Channel, message_id: str) -> Message | None:
        """A message of the channel by id: from the Redis history, else from Postgres."""
        for message in await self._recent(channel):
            if message.id == message_id:
                return message
        return await self.store.by_id(channel.name, message_id)

    async def _recent(self, channel: Channel) -> list[Message]:
        try:
            entries: Any = await self.redis.xrange(self.keys.channel(channel).history)
        except RedisError as exc:
            raise Unavailable("the message bus is unavailable") from exc
        return [unpack_record(int(fields[b"s"]), fields[b"m"]) for _, fields in entries]

    async def _complete(
        self, channel: Channel, newest_first: Any, withdrawn_raw: Any, *, after: int, upto: int, limit: int
    ) -> list[Message]:
        """Entries read from the Redis history (newest first), completed from Postgres for
        what is older than the history window: the `limit` newest of after < seq <= upto,
        oldest first, marked withdrawn from the set read with them (which also covers
        withdrawals the worker has not written to Postgres yet)."""
        recent = [unpack_record(int(fields[b"s"]), fields[b"m"]) for _, fields in reversed(newest_first)]
        lowest = recent[0].seq if recent else upto + 1
        older: list[Message] = []
        if lowest > after + 1 and len(recent) < limit:
            older = await self.store.newest_between(
                channel.name, after=after, upto=lowest - 1, limit=limit - len(recent)
            )
        messages = older + recent
        withdrawn = {_text(w) for w in withdrawn_raw}
        if withdrawn:
            messages = [replace(m, withdrawn=True) if m.id in withdrawn else m for m in messages]
        return messages


def _text(value: bytes | str | int) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
