"""The result bus's cancellation contract, the same for the in-process bus
and the Redis one: a cancel is seen by a later check (``cancelled``, or
``take`` as a worker takes the job) for as long as it was asked, and heard
at once by every process watching cancellations, each through its one
subscription."""

from __future__ import annotations

import asyncio

import redis.asyncio as redis

from scheduler.result_bus import ResultBus
from scheduler.result_bus.redis import RedisResultBus
from scheduler.topology import Topology
from schema.jobs import JobMark
from tests.support.redis_server import own_redis


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


async def test_taking_a_job_marks_it_and_says_whether_it_was_cancelled(bus: ResultBus) -> None:
    started = JobMark(state="started", attempt=0)
    assert await bus.take("job-t", started, 30) == (None, False)
    assert await bus.take("job-t", started, 30) == (started, False), "the mark it had before"
    await bus.cancel("job-t", 30)
    assert await bus.take("job-t", started, 30) == (started, True)
    later = JobMark(state="started", attempt=1)
    await bus.mark("job-t", later, 30)
    assert await bus.take("job-t", started, 30) == (later, True), "a later attempt's mark stays"
    assert await bus.mark("job-t", started, 30) == later


async def test_taking_a_job_on_a_redis_that_lost_its_scripts() -> None:
    """The mark's script goes by its hash in ``take``'s pipeline: a Redis
    that forgot it (restarted, flushed) is given it again."""
    with own_redis() as server:
        client = redis.Redis.from_url(server.url)
        try:
            bus = RedisResultBus(client, Topology("gztake"))
            started = JobMark(state="started", attempt=0)
            assert await bus.take("job-s", started, 30) == (None, False)
            await client.script_flush()
            await bus.cancel("job-s", 30)
            assert await bus.take("job-s", started, 30) == (started, True)
            assert await bus.take("job-s", started, 30) == (started, True), "and it is kept"
        finally:
            await client.aclose()
