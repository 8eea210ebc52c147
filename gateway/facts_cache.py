"""Channel facts cached for the whole gateway process: a thousand parents subscribing to
their structure's channel cost one query, not a thousand. Dropped whenever a fact change
is announced (changes are rare; correctness over cleverness), and after `ttl` seconds at
most, for the facts that change with time alone (a child's leaving date passing)."""

from __future__ import annotations

import asyncio

from realtime.channels import Channel
from realtime.directory import Directory
from realtime.invalidation import Change
from realtime.permissions import ChannelFacts


class FactsCache:
    def __init__(self, directory: Directory, max_entries: int = 100_000, ttl: float = 60.0) -> None:
        self.directory = directory
        self.max_entries = max_entries
        self.ttl = ttl
        self._facts: dict[str, tuple[float, ChannelFacts]] = {}
        self._loading: dict[str, asyncio.Future[ChannelFacts]] = {}
        self._generation = 0

    async def channel_facts(self, channel: Channel) -> ChannelFacts:
        name = channel.name
        now = asyncio.get_running_loop().time()
        cached = self._facts.get(name)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        loading = self._loading.get(name)
        if loading is not None:
            return await asyncio.shield(loading)
        generation = self._generation
        future: asyncio.Future[ChannelFacts] = asyncio.get_running_loop().create_future()
        self._loading[name] = future
        try:
            facts = await self.directory.channel_facts(channel)
        except BaseException as exc:
            future.set_exception(exc)
            # Nobody else may be waiting: don't let the loop log an unretrieved exception.
            future.exception()
            raise
        finally:
            self._loading.pop(name, None)
        future.set_result(facts)
        # A change announced while we were reading may have made this stale: don't keep it.
        if generation == self._generation:
            if len(self._facts) >= self.max_entries:
                self._facts.clear()
            self._facts[name] = (now, facts)
        return facts

    def invalidate(self, change: Change) -> None:
        if change.users or change.structures or change.children or change.families or change.groups:
            self._generation += 1
            self._facts.clear()
