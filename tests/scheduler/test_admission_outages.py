"""Admission and the pool statistics through outages of the stores they
read: the broker (the queue's total depth) or Redis (counts and worker
beats) refusing connections or frozen (connections open, nothing answers).
Admission admits without an estimate at once instead of failing or
waiting, says so once, and refuses again on fresh figures when the store
is back; a worker's jobs run while the statistics cannot be written, and
the counts they leave behind do not stay wrong.

Each store is reached through a proxy (``tests.support.tcp_proxy``) or is
the test's own Redis: the shared services never go away. ``HANG_GUARD``
only catches a hang: the bounds under test are far shorter."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import pytest
import redis.asyncio as redis

from scheduler.admission import DRIFT_CONFIRM, READ_LIMIT, PoolWatch, QueueFull
from scheduler.connections import amqp_connection
from scheduler.pool_stats import PoolStatsStore, WorkerBeat
from scheduler.pool_stats.redis import RedisPoolStats
from scheduler.priority import MESSAGE_PRIORITY
from scheduler.queues import JobQueue
from scheduler.queues.memory import MemoryJobQueue
from scheduler.queues.rabbitmq import RabbitJobQueue
from scheduler.topology import Topology
from scheduler.watched_queue import WatchedJobQueue
from schema.jobs import Job, Price, Route
from schema.settings import Settings
from tests.support.redis_server import own_redis
from tests.support.services import BROKER_URL, REDIS_URL, delete_namespace, require_services
from tests.support.tcp_proxy import tcp_proxy

PROVIDER = "p"
STANDARD, BULK = MESSAGE_PRIORITY["standard"], MESSAGE_PRIORITY["bulk"]
WAITING = 5  # jobs queued ahead: with one busy slot and 10 s a job, a 60 s wait
DEADLINE = 3.0  # the admitted queue wait, seconds: far below the estimate, so admission refuses
HANG_GUARD = 10.0
BLIND = "admitting without a queue-wait estimate"
BACK = "admission control is back"


@pytest.fixture
async def topology() -> AsyncIterator[Topology]:
    require_services()
    topology = Topology(f"gztest{uuid.uuid4().hex[:10]}")
    yield topology
    await delete_namespace(topology.namespace, [PROVIDER])
    client = redis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(f"{topology.namespace}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def job(priority: int = STANDARD) -> Job:
    return Job(account_id=1, key_id=1, model="m", routes=[Route(provider=PROVIDER, upstream_model="m")], payload={},
               deadline=time.time() + 60, price=Price(input_per_mtok=Decimal(0)), priority=priority)


def busy_worker() -> WorkerBeat:
    return WorkerBeat(worker="w", provider=PROVIDER, concurrency=1, in_flight=1, completed=0, service_rate=0.0,
                      service_time=None, expires_at=time.time() + 600)


async def saturated(jobs: JobQueue, stats: PoolStatsStore) -> PoolWatch:
    """``WAITING`` standard jobs in the queue, counted, and one busy worker;
    a watch that reads the stores on every admission (no cached view), and
    refuses a standard job."""
    for _ in range(WAITING):
        await jobs.enqueue(job())
    await stats.count({(PROVIDER, STANDARD): WAITING})
    await stats.beat(busy_worker())
    pools = PoolWatch(jobs, stats, Settings(default_service_time=10.0), max_age=0, read_timeout=0.5)
    assert await refuses(pools)
    return pools


async def refuses(pools: PoolWatch, priority: int = STANDARD, *, guard: float = HANG_GUARD) -> bool:
    try:
        await asyncio.wait_for(pools.admit(PROVIDER, priority, DEADLINE), guard)
    except QueueFull:
        return True
    return False


async def eventually(condition: Callable[[], Awaitable[bool]], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return True
        await asyncio.sleep(0.2)
    return False


async def admitted_blind(pools: PoolWatch, caplog: pytest.LogCaptureFixture) -> None:
    """Three admissions in the outage: each admitted, one warning, none
    waiting for a hung read to be given up (``READ_LIMIT``)."""
    with caplog.at_level(logging.WARNING, logger="scheduler.admission"):
        for _ in range(3):
            assert not await refuses(pools, guard=READ_LIMIT / 2), "refused without statistics to refuse on"
    warnings = [record.getMessage() for record in caplog.records if record.name == "scheduler.admission"]
    assert sum(BLIND in warning for warning in warnings) == 1, warnings


@pytest.mark.parametrize("failure", ["refusing", "frozen"])
async def test_admission_admits_at_once_while_the_broker_is_unreachable(
        topology: Topology, failure: str, caplog: pytest.LogCaptureFixture) -> None:
    async with tcp_proxy("127.0.0.1", 5672) as broker:
        connection = await amqp_connection(f"amqp://guest:guest@127.0.0.1:{broker.port}/")
        client = redis.Redis.from_url(REDIS_URL)
        try:
            pools = await saturated(RabbitJobQueue(connection, topology), RedisPoolStats(client, topology))

            if failure == "refusing":
                await broker.cut()
            else:
                broker.pause()
            await admitted_blind(pools, caplog)

            broker.restore()  # the connection comes back by itself (aio-pika's robust reconnect)
            with caplog.at_level(logging.WARNING, logger="scheduler.admission"):
                assert await eventually(lambda: refuses(pools)), "admission did not come back with the broker"
            assert BACK in caplog.text
        finally:
            await client.aclose()
            await connection.close()


@pytest.mark.parametrize("failure", ["stopped", "frozen"])
async def test_admission_admits_at_once_while_redis_is_down(
        topology: Topology, failure: str, caplog: pytest.LogCaptureFixture) -> None:
    connection = await amqp_connection(BROKER_URL)
    with own_redis() as server:
        async with tcp_proxy("127.0.0.1", server.port) as proxy:
            # No socket timeout of its own: only admission's bound stands between a frozen Redis and a hang.
            client = redis.Redis.from_url(f"redis://127.0.0.1:{proxy.port}/0", socket_timeout=None)
            try:
                stats = RedisPoolStats(client, topology)
                pools = await saturated(RabbitJobQueue(connection, topology), stats)

                if failure == "stopped":
                    server.stop()
                else:
                    proxy.pause()
                await admitted_blind(pools, caplog)

                if failure == "stopped":
                    server.start()  # empty: the counts and beats are gone
                    await stats.beat(busy_worker())  # the worker's next beat
                    # The jobs Redis forgot are still in the queue: taken as waiting at the lowest class.
                    assert await eventually(lambda: refuses(pools, BULK)), "the queue's own depth was not used"
                else:
                    proxy.resume()
                    assert await eventually(lambda: refuses(pools)), "admission did not come back with Redis"
                assert BACK in caplog.text
            finally:
                await client.aclose()
    await connection.close()


async def test_a_worker_takes_and_finishes_jobs_while_the_statistics_are_frozen(topology: Topology) -> None:
    async with tcp_proxy("127.0.0.1", 6379) as proxy:
        client = redis.Redis.from_url(f"redis://127.0.0.1:{proxy.port}/0", socket_timeout=None)
        stats = RedisPoolStats(client, topology)
        queue = WatchedJobQueue(MemoryJobQueue(), stats)
        finished: list[str] = []
        all_finished = asyncio.Event()

        async def handle(item: Job, redelivered: bool) -> None:
            finished.append(item.id)
            if len(finished) == 3:
                all_finished.set()

        serving = asyncio.create_task(queue.serve(PROVIDER, 2, handle))
        try:
            proxy.pause()
            for _ in range(3):
                await asyncio.wait_for(queue.enqueue(job()), HANG_GUARD)  # counted in the background
            await asyncio.wait_for(all_finished.wait(), HANG_GUARD)
        finally:
            proxy.resume()
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
        await queue.flush()

        # Whatever the outage kept of the counts in and out, the empty queue
        # is seen empty at once, and what is left is forgotten as drift.
        shared = redis.Redis.from_url(REDIS_URL)
        pools = PoolWatch(queue, RedisPoolStats(shared, topology), Settings())
        try:
            assert (await pools.view(PROVIDER, max_age=0)).depth == {}
            await asyncio.sleep(DRIFT_CONFIRM + 0.05)
            await pools.view(PROVIDER, max_age=0)
            counts = await RedisPoolStats(shared, topology).read(PROVIDER)
            assert all(count == 0 for count in counts.depth.values()), counts.depth
        finally:
            await shared.aclose()
            await client.aclose()
