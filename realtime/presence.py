"""Who is online in a household channel: a sorted set per channel in Redis, member
"<user id>:<name>", score = when the entry expires. Each gateway refreshes the entries of
its own connections; a dead gateway's entries simply expire."""

from __future__ import annotations

import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from realtime.channels import Channel
from realtime.errors import Unavailable
from realtime.keys import Keys

TTL_SECONDS = 45.0
REFRESH_SECONDS = 15.0


def member(user_id: int, name: str) -> str:
    return f"{user_id}:{name}"


class Presence:
    def __init__(self, redis: Redis, keys: Keys, *, ttl: float = TTL_SECONDS) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = ttl

    async def here(self, channels: dict[str, set[str]]) -> None:
        """Mark (or keep) these members present: {channel name: {member}}."""
        if not channels:
            return
        expires = time.time() + self.ttl
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name, members in channels.items():
                    key = self.keys.channel(Channel.parse(name)).presence
                    pipe.zadd(key, dict.fromkeys(members, expires))
                    pipe.expire(key, int(self.ttl) * 2)
                await pipe.execute()
        except RedisError as exc:
            raise Unavailable("presence is unavailable") from exc

    async def gone(self, channel: Channel, user_id: int, name: str) -> None:
        try:
            await self.redis.zrem(self.keys.channel(channel).presence, member(user_id, name))
        except RedisError as exc:
            raise Unavailable("presence is unavailable") from exc

    async def present(self, channel: Channel) -> list[dict[str, object]]:
        key = self.keys.channel(channel).presence
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(key, "-inf", time.time())
                pipe.zrange(key, 0, -1)
                _, members = await pipe.execute()
        except RedisError as exc:
            raise Unavailable("presence is unavailable") from exc
        users = []
        for raw in members:
            user_id, _, name = (raw.decode() if isinstance(raw, bytes) else raw).partition(":")
            users.append({"id": int(user_id), "name": name})
        return sorted(users, key=lambda u: int(str(u["id"])))
