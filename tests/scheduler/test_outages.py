"""Transport failures are the domain's outage errors from the transport's
edge on, and only they are: a defect on the same path (here a corrupt job
mark that makes the mark script fail) surfaces as itself, with its
traceback, and is never logged or handled as "the bus is down"."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import redis.asyncio as redis
from redis.exceptions import ResponseError

from scheduler.queues import DeadLetter
from scheduler.queues.memory import MemoryJobQueue, MemoryUsageQueue
from scheduler.result_bus.redis import RedisResultBus
from scheduler.topology import Topology
from schema.catalog import ProviderSpec
from schema.errors import BusUnavailable, TransportUnavailable
from schema.jobs import Job, JobMark, Price, Route, UsageEvent
from tests.support.services import REDIS_URL, require_services
from workers.adapters.mock import MockAdapter
from workers.pool import ProviderPool

STARTED = JobMark(state="started", attempt=0)
UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def job() -> Job:
    return Job(account_id=1, key_id=1, model="mock/echo", routes=[Route(provider="mock", upstream_model="echo")],
               payload={"messages": [{"role": "user", "content": "hi"}]}, deadline=time.time() + 60,
               price=Price(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2)))


@pytest.fixture
async def topology() -> AsyncIterator[Topology]:
    require_services()
    topology = Topology(f"gztest{uuid.uuid4().hex[:10]}")
    yield topology
    client = redis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(f"{topology.namespace}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def corrupt_mark(topology: Topology, job_id: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        await client.set(f"{topology.namespace}:jobstate:{job_id}", "not a mark", ex=60)
    finally:
        await client.aclose()


async def test_an_unreachable_bus_is_an_outage(topology: Topology) -> None:
    client = redis.Redis.from_url(UNREACHABLE, socket_connect_timeout=1)
    bus = RedisResultBus(client, topology)
    try:
        with pytest.raises(BusUnavailable):
            await bus.take("j", STARTED, 60)
        with pytest.raises(BusUnavailable):
            await bus.mark("j", STARTED, 60)
        with pytest.raises(BusUnavailable):
            await bus.publish({"job": "j", "seq": 0, "kind": "end", "data": {}})
        with pytest.raises(BusUnavailable):
            await bus.cancel("j", 60)
    finally:
        await client.aclose()


async def test_a_corrupt_mark_is_a_defect_not_an_outage(topology: Topology) -> None:
    await corrupt_mark(topology, "j")
    client = redis.Redis.from_url(REDIS_URL)
    bus = RedisResultBus(client, topology)
    try:
        with pytest.raises(ResponseError) as raised:
            await bus.take("j", STARTED, 60)
        assert not isinstance(raised.value, TransportUnavailable)
    finally:
        await client.aclose()


async def served(bus: RedisResultBus, item: Job) -> tuple[list[DeadLetter], list[UsageEvent]]:
    """Serve one job through a pool on ``bus``; the dead letters and usage events it left."""
    queue, usage = MemoryJobQueue(), MemoryUsageQueue()
    pool = ProviderPool(ProviderSpec(name="mock", adapter="mock"), MockAdapter(), jobs=queue, results=bus,
                        usage=usage, concurrency=1)
    letters: list[DeadLetter] = []
    done = asyncio.Event()

    async def read(letter: DeadLetter) -> None:
        letters.append(letter)
        done.set()

    await queue.enqueue(item)
    tasks = [asyncio.create_task(queue.serve("mock", 1, pool.handle)),
             asyncio.create_task(queue.dead_letters.serve(read))]
    try:
        for _ in range(100):  # the job ends in a usage event or a dead letter
            if usage.pending() or done.is_set():
                break
            await asyncio.sleep(0.05)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    settled = []
    while usage.pending():
        settled.append(usage._events.get_nowait())
    return letters, settled


async def test_a_worker_reports_a_defect_on_its_bus_as_a_defect(
        topology: Topology, caplog: pytest.LogCaptureFixture) -> None:
    item = job()
    await corrupt_mark(topology, item.id)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        with caplog.at_level(logging.INFO):
            letters, settled = await served(RedisResultBus(client, topology), item)
    finally:
        await client.aclose()
    assert [letter.reason for letter in letters] == ["rejected"] and settled == []
    assert "cannot be recorded" not in caplog.text, "a defect was taken for an outage"
    (failed,) = [record for record in caplog.records if "failed in its handler" in record.getMessage()]
    assert failed.exc_info is not None and isinstance(failed.exc_info[1], ResponseError), "logged without its cause"


async def test_a_worker_settles_a_job_at_zero_when_its_bus_is_unreachable(
        topology: Topology, caplog: pytest.LogCaptureFixture) -> None:
    item = job()
    client = redis.Redis.from_url(UNREACHABLE, socket_connect_timeout=1)
    try:
        with caplog.at_level(logging.INFO):
            letters, settled = await served(RedisResultBus(client, topology), item)
    finally:
        await client.aclose()
    assert letters == [] and [(u.job_id, u.usage.input_tokens, u.usage.output_tokens) for u in settled] == [
        (item.id, 0, 0)]
    (outage,) = [record for record in caplog.records if "cannot be recorded" in record.getMessage()]
    assert outage.exc_info is None, "an outage is not a defect: no traceback"
