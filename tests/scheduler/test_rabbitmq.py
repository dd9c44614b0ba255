"""The RabbitMQ job queue on the real broker: priorities, deadlines that
dead-letter, redelivery of unacknowledged jobs, and the usage queue."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal

import aio_pika
import pytest

from scheduler.connections import amqp_connection
from scheduler.priority import Work
from scheduler.queues.rabbitmq import RabbitJobQueue, RabbitUsageQueue
from scheduler.topology import Topology
from schema.jobs import Job, Price, Route, Usage, UsageEvent
from tests.support.services import BROKER_URL, require_services


@pytest.fixture
async def topology() -> AsyncIterator[Topology]:
    require_services()
    topology = Topology(f"gztest{uuid.uuid4().hex[:10]}")
    yield topology
    connection = await aio_pika.connect(BROKER_URL)
    async with connection:
        channel = await connection.channel()
        for queue in (*(topology.job_queue("p", work) for work in Work), topology.dead_queue, topology.usage_queue):
            await channel.queue_delete(queue)
        for exchange in (topology.jobs_exchange, topology.dead_exchange):
            await channel.exchange_delete(exchange)


def job(name: str, *, priority: int = 2, ttl: float = 60) -> Job:
    return Job(account_id=1, key_id=1, model=name, routes=[Route(provider="p", upstream_model="m")], payload={},
               priority=priority, deadline=time.time() + ttl, price=Price())


async def take(queue: RabbitJobQueue, count: int, *, concurrency: int = 1, ack: bool = True) -> list[tuple[str, bool]]:
    """Serve until ``count`` jobs were handed over; without ``ack`` the handler never returns."""
    taken: list[tuple[str, bool]] = []
    enough = asyncio.Event()

    async def handle(item: Job, redelivered: bool) -> None:
        taken.append((item.model, redelivered))
        if len(taken) == count:
            enough.set()
        if not ack:
            await asyncio.Event().wait()

    server = asyncio.create_task(queue.serve("p", concurrency, handle))
    try:
        await asyncio.wait_for(enough.wait(), 10)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
    return taken


async def test_waiting_jobs_are_served_by_priority(topology: Topology) -> None:
    connection = await amqp_connection(BROKER_URL)
    async with connection:
        queue = RabbitJobQueue(connection, topology)
        for name, priority in [("bulk", 0), ("standard", 2), ("realtime", 4), ("standard-2", 2)]:
            await queue.enqueue(job(name, priority=priority))
        assert await queue.depth("p") == 4
        taken = await take(queue, 4)
    assert [name for name, _ in taken] == ["realtime", "standard", "standard-2", "bulk"]


async def test_expired_jobs_are_dead_lettered_not_served(topology: Topology) -> None:
    connection = await amqp_connection(BROKER_URL)
    async with connection:
        queue = RabbitJobQueue(connection, topology)
        doomed = job("doomed", ttl=0.2)
        await queue.enqueue(doomed)
        await queue.enqueue(job("alive"))
        await asyncio.sleep(0.5)
        taken = await take(queue, 1)
        channel = await connection.channel()
        dead = await channel.declare_queue(topology.dead_queue, durable=True)
        message = await dead.get(timeout=5)
        await message.ack()
    assert taken == [("alive", False)]
    assert message.message_id == doomed.id


async def test_unacknowledged_jobs_are_redelivered_after_a_crash(topology: Topology) -> None:
    crashed = await amqp_connection(BROKER_URL)
    queue = RabbitJobQueue(crashed, topology)
    await queue.enqueue(job("survivor"))
    assert await take(queue, 1, ack=False) == [("survivor", False)]
    await crashed.close()  # the worker dies holding the job

    connection = await amqp_connection(BROKER_URL)
    async with connection:
        assert await take(RabbitJobQueue(connection, topology), 1) == [("survivor", True)]


async def test_usage_events_are_durable_and_acked_after_handling(topology: Topology) -> None:
    event = UsageEvent(job_id="job_1", account_id=1, key_id=1, provider="p", model="m",
                       usage=Usage(input_tokens=3, output_tokens=4), price=Price(input_per_mtok=Decimal("1.5")))
    connection = await amqp_connection(BROKER_URL)
    async with connection:
        usage = RabbitUsageQueue(connection, topology)
        await usage.publish(event)
        received: list[UsageEvent] = []
        got = asyncio.Event()

        async def handle(batch: Sequence[UsageEvent]) -> None:
            received.extend(batch)
            got.set()

        server = asyncio.create_task(usage.serve(handle))
        await asyncio.wait_for(got.wait(), 10)
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
    assert received == [event]


async def test_a_depth_read_the_broker_refuses_leaves_publishing_working(topology: Topology) -> None:
    """A declare the broker refuses closes its channel; a depth read given
    up mid-way (admission does, when the broker is slow) does too. Neither
    may leave the channel jobs are published on closed: under load it was,
    and every enqueue after it failed."""
    connection = await amqp_connection(BROKER_URL)
    async with await aio_pika.connect(BROKER_URL) as other:
        channel = await other.channel()
        await channel.declare_queue(topology.job_queue("q"), durable=True)  # no x-max-priority: a conflict
        try:
            queue = RabbitJobQueue(connection, topology)
            await queue.enqueue(job("first"))
            with pytest.raises(Exception):  # noqa: B017 - refused by the broker: how it says so is aio-pika's
                await queue.depth("q")
            await queue.enqueue(job("after a refused depth read"))
            assert await queue.depth("p") == 2
            assert [name for name, _ in await take(queue, 2)] == ["first", "after a refused depth read"]
        finally:
            await connection.close()
            await channel.queue_delete(topology.job_queue("q"))


async def test_a_publishing_channel_the_broker_closed_is_opened_again(topology: Topology) -> None:
    connection = await amqp_connection(BROKER_URL)
    try:
        queue = RabbitJobQueue(connection, topology)
        await queue.enqueue(job("first"))
        async with await aio_pika.connect(BROKER_URL) as other:
            await (await other.channel()).exchange_delete(topology.jobs_exchange)  # the next publish is refused
        with pytest.raises(Exception):  # noqa: B017 - refused by the broker: how it says so is aio-pika's
            await queue.enqueue(job("to a deleted exchange"))
        await queue.enqueue(job("after the channel closed"))
        assert [name for name, _ in await take(queue, 2)] == ["first", "after the channel closed"]
    finally:
        await connection.close()
