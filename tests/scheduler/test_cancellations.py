"""The result bus's cancellation contract, the same for the in-process bus
and the Redis one: a cancel is seen by a later check for as long as it was
asked, and heard at once by every process watching cancellations, each
through its one subscription."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from scheduler.memory import MemoryResultBus
from scheduler.redis_bus import RedisResultBus
from scheduler.topology import Topology
from scheduler.transport import ResultBus
from tests.support.services import REDIS_URL, require_services


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[ResultBus]:
    if request.param == "memory":
        yield MemoryResultBus()
        return
    require_services()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        yield RedisResultBus(client, Topology(f"gztest{uuid.uuid4().hex[:8]}"))
    finally:
        await client.aclose()


async def watch(bus: ResultBus, heard: list[str]) -> None:
    async for job_id in bus.cancellations():
        heard.append(job_id)


async def until_listening(bus: ResultBus, *watchers: list[str]) -> None:
    """Subscriptions go live asynchronously: cancel a throwaway job until every watcher heard one."""
    for attempt in range(200):
        await bus.cancel(f"warm-up-{attempt}", 5)
        await asyncio.sleep(0.01)
        if all(watcher for watcher in watchers):
            for watcher in watchers:
                watcher.clear()
            return
    raise AssertionError("the watchers never heard a cancellation")


async def test_a_cancel_is_seen_by_later_checks_and_heard_by_every_watcher(bus: ResultBus) -> None:
    assert not await bus.cancelled("job-a")
    first, second = [], []  # two worker processes
    watchers = [asyncio.create_task(watch(bus, heard)) for heard in (first, second)]
    try:
        await until_listening(bus, first, second)
        await bus.cancel("job-a", 30)
        for _ in range(200):
            if "job-a" in first and "job-a" in second:
                break
            await asyncio.sleep(0.01)
        assert first == ["job-a"] and second == ["job-a"]
        assert await bus.cancelled("job-a")
        assert not await bus.cancelled("job-b")
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)


async def test_a_cancel_asked_before_anyone_watched_is_still_seen(bus: ResultBus) -> None:
    """A job cancelled while it waits in a queue: no worker was listening,
    the one that takes it checks."""
    await bus.cancel("job-queued", 30)
    assert await bus.cancelled("job-queued")


async def test_a_cancel_is_forgotten_after_its_ttl(bus: ResultBus) -> None:
    await bus.cancel("job-short", 1)
    assert await bus.cancelled("job-short")
    await asyncio.sleep(1.2)
    assert not await bus.cancelled("job-short")
