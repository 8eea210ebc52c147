"""Erasure (terms: the right to erasure): a user, a child or a household of a structure, and
everything that holds their data — database rows, messages in PostgreSQL and in Redis
(history and ingest streams), and every stored object of their media, each version.

The order makes a crash at any point safe to retry, and keeps anything from coming back:

1. One transaction deletes the subject's rows, its messages and media rows, and writes a
   tombstone for each erased message id (`erased_messages`): the persistence worker never
   inserts a tombstoned message, whenever its ingest entry reaches it. The media objects are
   deleted from the store inside that transaction, before it commits: if the store fails,
   nothing is committed and the erasure is asked again.
2. Then the Redis streams of the structure's channels and the ingest streams are read, and
   the entries of erased messages (including those not persisted yet) are deleted, after
   being tombstoned in turn. The subject's row is gone by then, so no new message about
   them can be accepted: what this pass finds is all there is.
3. Connected clients are told the messages were withdrawn, and the gateways re-check the
   connections of the people concerned (`announce`).

The audit log keeps the fact (who erased what, by id, and how much), never the content.
Authorisation is the caller's (gateway/erasure_api.py asks `may_administer`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from redis.asyncio import Redis
from redis.exceptions import RedisError

from realtime import audit
from realtime.channels import Channel
from realtime.database import Pool
from realtime.errors import Conflict, NotFound, Unavailable
from realtime.invalidation import announce
from realtime.keys import Keys
from realtime.media_store import MediaStore
from realtime.message_store import ABOUT_CHILD, LOCK_CHANNELS
from realtime.messages import Message, unpack_record

log = logging.getLogger("procreche.erasure")

Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
Kind = Literal["user", "child", "household"]
KINDS: tuple[Kind, ...] = ("user", "child", "household")
PAGE = 1000


@dataclass(frozen=True, slots=True)
class Subject:
    kind: Kind
    id: int

    def holds(self, message: Message) -> bool:
        """Whether the message is this subject's data: written by the user, in the child's
        feed or about the child, in the household's conversation."""
        if self.kind == "user":
            return message.author.id == self.id
        if self.kind == "child":
            return message.channel == f"child:{self.id}" or self.id in message.concerns
        return message.channel == f"family:{self.id}"

    @property
    def own_channel(self) -> str | None:
        """The channel that exists for this subject alone, erased whole."""
        return {"child": f"child:{self.id}", "household": f"family:{self.id}"}.get(self.kind)


@dataclass(frozen=True, slots=True)
class Erased:
    subject: Subject
    messages: int
    media: int

    def public(self) -> dict[str, Any]:
        return {"subject": self.subject.kind, "id": self.subject.id, "messages": self.messages, "media": self.media}


# The messages of each subject that PostgreSQL holds.
MESSAGES_OF: dict[Kind, str] = {
    "user": "SELECT id, channel FROM messages WHERE author_id = $1",
    "child": f"SELECT m.id, m.channel FROM messages m WHERE {ABOUT_CHILD}",
    "household": "SELECT id, channel FROM messages WHERE channel = 'family:' || $1::bigint",
}
# Media not (or not yet) in a message that are the subject's: uploads by the user, photos
# tagging the child waiting for their message.
LOOSE_MEDIA_OF: dict[Kind, str] = {
    "user": "SELECT id FROM media WHERE uploader_id = $1",
    "child": "SELECT id FROM media WHERE $1 = ANY(children)",
    "household": "SELECT id FROM media WHERE channel = 'family:' || $1::bigint",
}


def media_keys(rows: Iterable[asyncpg.Record]) -> list[str]:
    keys = [r["incoming_key"] for r in rows if r["incoming_key"]]
    for r in rows:
        keys.extend(str(v["key"]) for v in (r["renditions"] or {}).values() if isinstance(v, dict) and "key" in v)
    return keys


class Eraser:
    def __init__(self, pool: Pool, redis: Redis, keys: Keys, store: MediaStore) -> None:
        self.pool = pool
        self.redis = redis
        self.keys = keys
        self.store = store

    async def erase(self, structure_id: int, subject: Subject, actor_id: int | None, *, why: str = "request") -> Erased:
        """`why`: "request" (an admin's), or "retention" (the scheduled job, no actor)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self._check(conn, structure_id, subject)
            people = await self._people(conn, subject)
            rows = await conn.fetch(MESSAGES_OF[subject.kind], subject.id)
            ids = [r["id"] for r in rows]
            await conn.execute(LOCK_CHANNELS, list({r["channel"] for r in rows}))
            loose = [r["id"] for r in await conn.fetch(LOOSE_MEDIA_OF[subject.kind], subject.id)]
            media = await self._forget(conn, ids, loose)
            await self._delete_subject(conn, subject)
            await audit.record(
                conn,
                actor_id=actor_id,
                structure_id=structure_id,
                action=f"erasure.{subject.kind}",
                subject_type=subject.kind,
                subject_id=subject.id,
                details={"messages": len(ids), "media": media, "why": why},
            )
        found = await self._sweep_redis(structure_id, subject.holds)
        extra = [m for m in found if uuid.UUID(m.id) not in set(ids)]
        if extra:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(LOCK_CHANNELS, list({m.channel for m in extra}))
                media += await self._forget(conn, [uuid.UUID(m.id) for m in extra], [])
        await self._drop_channel(subject)
        await self._tell_withdrawn([(str(r["id"]), r["channel"]) for r in rows] + [(m.id, m.channel) for m in extra])
        await announce(
            self.redis,
            self.keys,
            users=people,
            children=[subject.id] if subject.kind == "child" else [],
            families=[subject.id] if subject.kind == "household" else [],
        )
        total = len(ids) + len(extra)
        log.info("erased %s %d: %d messages, %d media", subject.kind, subject.id, total, media)
        return Erased(subject, total, media)

    async def _check(self, conn: Conn, structure_id: int, subject: Subject) -> None:
        """The subject is of this structure; a user only if the erasure loses nothing that
        another structure or a child's consent depends on."""
        if subject.kind == "child":
            found = await conn.fetchval(
                "SELECT 1 FROM children WHERE id = $1 AND structure_id = $2 FOR UPDATE", subject.id, structure_id
            )
        elif subject.kind == "household":
            found = await conn.fetchval(
                "SELECT 1 FROM families WHERE id = $1 AND structure_id = $2 FOR UPDATE", subject.id, structure_id
            )
        else:
            found = await conn.fetchval(
                "SELECT 1 FROM memberships WHERE user_id = $1 AND structure_id = $2 LIMIT 1", subject.id, structure_id
            )
        if not found:
            raise NotFound(f"no such {subject.kind} in this structure", code="not_found")
        if subject.kind != "user":
            return
        await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", subject.id)
        if await conn.fetchval(
            "SELECT 1 FROM memberships WHERE user_id = $1 AND structure_id <> $2 LIMIT 1", subject.id, structure_id
        ):
            raise Conflict(
                "this account has a role in another structure: remove it from this one instead",
                code="member_elsewhere",
            )
        if await conn.fetchval(
            "SELECT 1 FROM memberships m WHERE m.user_id = $1 AND m.role = 'admin' AND NOT EXISTS"
            " (SELECT 1 FROM memberships o WHERE o.structure_id = m.structure_id AND o.role = 'admin'"
            "  AND o.user_id <> $1)",
            subject.id,
        ):
            raise Conflict("a structure keeps at least one admin", code="last_admin")
        if await conn.fetchval(
            "SELECT 1 FROM guardianships g JOIN children c ON c.id = g.child_id"
            " WHERE g.user_id = $1 AND g.parental_authority AND (c.left_on IS NULL OR c.left_on >= current_date)",
            subject.id,
        ):
            # Erasing a holder of parental authority would drop them from the consent
            # circle, and might make a child publishable without their consent.
            raise Conflict(
                "this account holds parental authority over a child still enrolled: end that guardianship first",
                code="holds_parental_authority",
            )

    async def _people(self, conn: Conn, subject: Subject) -> list[int]:
        """The users whose connections the gateways must re-check once the subject is gone."""
        if subject.kind == "user":
            return [subject.id]
        if subject.kind == "child":
            rows = await conn.fetch("SELECT user_id FROM guardianships WHERE child_id = $1", subject.id)
        else:
            rows = await conn.fetch("SELECT user_id FROM family_members WHERE family_id = $1", subject.id)
        return [r["user_id"] for r in rows]

    async def _forget(self, conn: Conn, message_ids: Collection[uuid.UUID], media_ids: Collection[uuid.UUID]) -> int:
        """Tombstone and delete messages, their media and the media given; the objects go
        from the store before the caller commits. The number of media erased."""
        media = await conn.fetch(
            "SELECT id, renditions, incoming_key FROM media WHERE message_id = ANY($1::uuid[]) OR id = ANY($2::uuid[])"
            " FOR UPDATE",
            list(message_ids),
            list(media_ids),
        )
        if message_ids:
            await conn.execute(
                "INSERT INTO erased_messages (id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING", list(message_ids)
            )
            await conn.execute("DELETE FROM reports WHERE message_id = ANY($1::uuid[])", list(message_ids))
            await conn.execute("DELETE FROM message_withdrawals WHERE message_id = ANY($1::uuid[])", list(message_ids))
            await conn.execute("DELETE FROM messages WHERE id = ANY($1::uuid[])", list(message_ids))
        if media:
            await self.store.delete(media_keys(media))
            await conn.execute("DELETE FROM media WHERE id = ANY($1::uuid[])", [r["id"] for r in media])
        return len(media)

    async def _delete_subject(self, conn: Conn, subject: Subject) -> None:
        if subject.kind == "child":
            await conn.execute("DELETE FROM receipts WHERE channel = $1", f"child:{subject.id}")
            await conn.execute("DELETE FROM children WHERE id = $1", subject.id)
        elif subject.kind == "household":
            await conn.execute("DELETE FROM receipts WHERE channel = $1", f"family:{subject.id}")
            await conn.execute("DELETE FROM families WHERE id = $1", subject.id)
        else:
            await conn.execute("DELETE FROM reports WHERE reporter_id = $1", subject.id)
            exports = await conn.fetch("DELETE FROM exports WHERE requester_id = $1 RETURNING object_key", subject.id)
            if keys := [r["object_key"] for r in exports if r["object_key"]]:
                await self.store.delete(keys)
            await conn.execute("DELETE FROM users WHERE id = $1", subject.id)

    async def _channels(self, structure_id: int) -> list[Channel]:
        rows = await self.pool.fetch(
            "SELECT 'group:' || id AS name FROM groups WHERE structure_id = $1"
            " UNION ALL SELECT 'child:' || id FROM children WHERE structure_id = $1"
            " UNION ALL SELECT 'family:' || id FROM families WHERE structure_id = $1",
            structure_id,
        )
        return [Channel.parse(f"structure:{structure_id}"), *(Channel.parse(r["name"]) for r in rows)]

    async def _sweep_redis(self, structure_id: int, holds: Callable[[Message], bool]) -> list[Message]:
        """Delete from the history and ingest streams every entry of a message the subject
        holds; the messages found. The subject's own channel, gone from the tables by now,
        is among those swept by its name."""
        streams = [self.keys.channel(c).history for c in await self._channels(structure_id)]
        found: dict[str, Message] = {}
        try:
            for stream in [*streams, *self.keys.all_ingest()]:
                doomed: list[bytes] = []
                start = "-"
                while True:
                    entries: Any = await self.redis.xrange(stream, min=start, count=PAGE)
                    for entry_id, fields in entries:
                        if b"m" not in fields:
                            continue  # a withdrawal: an id, no content
                        try:
                            message = unpack_record(int(fields[b"s"]), fields[b"m"])
                        except (KeyError, ValueError, TypeError):
                            continue  # unreadable: the worker dead-letters it
                        if holds(message):
                            found[message.id] = message
                            doomed.append(entry_id)
                    if len(entries) < PAGE:
                        break
                    start = "(" + entries[-1][0].decode()
                if doomed:
                    await self.redis.xdel(stream, *doomed)
        except RedisError as exc:
            raise Unavailable("the message bus is unavailable: ask for the erasure again") from exc
        return list(found.values())

    async def _drop_channel(self, subject: Subject) -> None:
        if subject.own_channel is None:
            return
        ck = self.keys.channel(Channel.parse(subject.own_channel))
        try:
            await self.redis.delete(ck.history, ck.withdrawn, ck.presence, ck.seq, ck.epoch)
        except RedisError as exc:
            raise Unavailable("the message bus is unavailable: ask for the erasure again") from exc

    async def _tell_withdrawn(self, messages: Iterable[tuple[str, str]]) -> None:
        """Connected clients drop the erased messages they show, as for a withdrawal."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for message_id, channel in messages:
                    pipe.publish(self.keys.live(channel), f"w {message_id}".encode())
                await pipe.execute()
        except RedisError:
            log.warning("erasure: the withdrawal of erased messages could not be announced live")
