"""The gateway's channel-facts cache: one load per channel, dropped on any announced change."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from gateway.facts_cache import FactsCache
from realtime.channels import Channel
from realtime.directory import Directory
from realtime.invalidation import Change
from realtime.permissions import ChannelFacts, StructureFacts


class CountingDirectory:
    """Answers channel_facts after `gate` opens, counting the loads."""

    def __init__(self) -> None:
        self.loads = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def channel_facts(self, channel: Channel) -> ChannelFacts:
        self.loads += 1
        await self.gate.wait()
        if self.fail:
            raise ConnectionError("database down")
        return StructureFacts(channel.id)


def cache_of(directory: CountingDirectory) -> FactsCache:
    return FactsCache(cast(Directory, directory))


CHANNEL = Channel.parse("structure:1")


async def test_concurrent_requests_share_one_load() -> None:
    directory = CountingDirectory()
    directory.gate.clear()
    cache = cache_of(directory)
    waiting = [asyncio.create_task(cache.channel_facts(CHANNEL)) for _ in range(50)]
    await asyncio.sleep(0)
    directory.gate.set()
    assert set(await asyncio.gather(*waiting)) == {StructureFacts(1)}
    assert directory.loads == 1
    await cache.channel_facts(CHANNEL)
    assert directory.loads == 1


async def test_an_announced_change_drops_the_cache() -> None:
    directory = CountingDirectory()
    cache = cache_of(directory)
    await cache.channel_facts(CHANNEL)
    cache.invalidate(Change(sessions=frozenset({b"x"})))  # session-only changes keep facts
    await cache.channel_facts(CHANNEL)
    assert directory.loads == 1
    cache.invalidate(Change(children=frozenset({7})))
    await cache.channel_facts(CHANNEL)
    assert directory.loads == 2


async def test_facts_read_across_a_change_are_not_kept() -> None:
    directory = CountingDirectory()
    directory.gate.clear()
    cache = cache_of(directory)
    loading = asyncio.create_task(cache.channel_facts(CHANNEL))
    await asyncio.sleep(0)
    cache.invalidate(Change(structures=frozenset({1})))
    directory.gate.set()
    await loading
    await cache.channel_facts(CHANNEL)
    assert directory.loads == 2


async def test_a_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    directory = CountingDirectory()
    directory.gate.clear()
    directory.fail = True
    cache = cache_of(directory)
    waiting = [asyncio.create_task(cache.channel_facts(CHANNEL)) for _ in range(3)]
    await asyncio.sleep(0)
    directory.gate.set()
    for result in await asyncio.gather(*waiting, return_exceptions=True):
        assert isinstance(result, ConnectionError)
    directory.fail = False
    assert await cache.channel_facts(CHANNEL) == StructureFacts(1)
    assert directory.loads == 2


async def test_a_lone_failed_load_logs_nothing_unretrieved() -> None:
    directory = CountingDirectory()
    directory.fail = True
    with pytest.raises(ConnectionError):
        await cache_of(directory).channel_facts(CHANNEL)


async def test_facts_are_read_again_after_their_time_to_live() -> None:
    directory = CountingDirectory()
    cache = FactsCache(cast(Directory, directory), ttl=0.05)
    await cache.channel_facts(CHANNEL)
    await cache.channel_facts(CHANNEL)
    assert directory.loads == 1
    await asyncio.sleep(0.06)
    await cache.channel_facts(CHANNEL)
    assert directory.loads == 2
