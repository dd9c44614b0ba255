"""Reserved slots in both job queues, the in-process one and RabbitMQ's on
the real broker: a pool of 4 with 1 reserved runs at most 3 bulk or batch
jobs at once, a realtime job beside them without waiting, bulk before
batch; with a slot kept for realtime work, at most 3 standard jobs, however
many wait, and a realtime job beside them at once; each kind of work is
routed to its own queue and counted in the depth; a pool that stops
serving starts none of the jobs waiting for a slot, and they are served
again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import aio_pika
import pytest

from scheduler.connections import amqp_connection
from scheduler.priority import BATCH_PRIORITY, MESSAGE_PRIORITY, Work
from scheduler.queues import JobQueue
from scheduler.queues.memory import MemoryJobQueue
from scheduler.queues.rabbitmq import RabbitJobQueue
from scheduler.queues.slots import Reserve
from scheduler.topology import Topology
from schema.jobs import Job, Price, Route
from tests.scheduler.test_rabbitmq import topology  # noqa: F401 (fixture)
from tests.support.services import BROKER_URL

BULK, STANDARD, REALTIME = MESSAGE_PRIORITY["bulk"], MESSAGE_PRIORITY["standard"], MESSAGE_PRIORITY["realtime"]
ONE_RESERVED = Reserve(1)


@pytest.fixture(params=["memory", "rabbitmq"])
async def queue(request: pytest.FixtureRequest, topology: Topology) -> AsyncIterator[JobQueue]:  # noqa: F811
    if request.param == "memory":
        yield MemoryJobQueue()
        return
    connection = await amqp_connection(BROKER_URL)
    async with connection:
        yield RabbitJobQueue(connection, topology)


def job(name: str, priority: int) -> Job:
    return Job(account_id=1, key_id=1, model=name, routes=[Route(provider="p", upstream_model="m")], payload={},
               priority=priority, deadline=time.time() + 60, price=Price())


class Pool:
    """A pool of 4 slots, 1 reserved unless told, whose jobs run until the
    test ends them (``finish``): what it holds is what it runs."""

    def __init__(self, queue: JobQueue, *, drain_timeout: float = 0, reserve: Reserve = ONE_RESERVED) -> None:
        self.running: list[str] = []
        self.started: list[str] = []
        self.waiting = 0  # jobs the pool took from the broker that wait for a slot, as the queue counts them
        self._finish: dict[str, asyncio.Event] = {}
        self._server = asyncio.create_task(queue.serve("p", 4, self.handle, drain_timeout=drain_timeout,
                                                       reserve=reserve, waiting=self.count_waiting))

    def count_waiting(self, delta: int) -> None:
        self.waiting += delta

    async def handle(self, item: Job, redelivered: bool) -> None:
        self.started.append(item.model)
        self.running.append(item.model)
        try:
            await self._finish.setdefault(item.model, asyncio.Event()).wait()
        finally:
            self.running.remove(item.model)

    def finish(self, *names: str) -> None:
        for name in names:
            self._finish.setdefault(name, asyncio.Event()).set()

    @staticmethod
    async def until(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting until {what}"
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.cancel()
        await asyncio.gather(self._server, return_exceptions=True)


async def test_low_work_leaves_a_slot_to_realtime_jobs(queue: JobQueue) -> None:
    for index in range(3):
        await queue.enqueue(job(f"batch{index}", BATCH_PRIORITY))
    for index in range(3):
        await queue.enqueue(job(f"bulk{index}", BULK))
    pool = Pool(queue)
    try:
        await pool.until(lambda: len(pool.running) == 3, "low work fills its 3 slots")
        await asyncio.sleep(0.2)  # time for a 4th, were it to be taken
        assert sorted(pool.running) == ["bulk0", "bulk1", "bulk2"], "bulk before batch, 3 at most"
        await queue.enqueue(job("realtime", REALTIME))
        started = time.monotonic()
        await pool.until(lambda: "realtime" in pool.running, "the realtime job runs")
        assert time.monotonic() - started < 1, "without waiting for a low job to finish"
        pool.finish("realtime", "bulk0")
        await pool.until(lambda: "batch0" in pool.running, "a freed low slot goes to the next low job")
        assert len(pool.running) == 3
    finally:
        pool.finish(*(f"{kind}{index}" for kind in ("bulk", "batch") for index in range(3)))
        await pool.stop()


async def test_standard_work_leaves_the_realtime_reserve(queue: JobQueue) -> None:
    standard = [f"standard{index}" for index in range(8)]
    for name in standard:
        await queue.enqueue(job(name, STANDARD))
    pool = Pool(queue, reserve=Reserve(1, 1))
    try:
        await pool.until(lambda: len(pool.running) == 3, "standard work fills its 3 slots")
        await asyncio.sleep(0.2)  # time for a 4th, were it to be taken
        assert pool.running == standard[:3]
        # On RabbitMQ no standard job waits in the pool for a slot (it takes no more than it may run), so
        # none holds the realtime job back in the broker.
        await queue.enqueue(job("realtime", REALTIME))
        started = time.monotonic()
        await pool.until(lambda: "realtime" in pool.running, "the realtime job runs")
        assert time.monotonic() - started < 1, "without waiting for a standard job to finish"
        pool.finish("realtime")
        await asyncio.sleep(0.2)
        assert len(pool.running) == 3, "the reserve is realtime's alone"
        pool.finish("standard0")
        await pool.until(lambda: "standard3" in pool.running, "a freed standard slot goes to the next one")
    finally:
        pool.finish(*standard)
        await pool.stop()


async def test_a_job_the_pool_holds_for_a_slot_is_counted_waiting(queue: JobQueue) -> None:
    standard = [f"standard{index}" for index in range(4)]
    for name in standard:
        await queue.enqueue(job(name, STANDARD))
    pool = Pool(queue)
    try:
        await pool.until(lambda: len(pool.running) == 4, "4 standard jobs fill the pool")
        await queue.enqueue(job("realtime", REALTIME))
        if isinstance(queue, RabbitJobQueue):  # pushed at once on its own channel, it waits in the pool
            await pool.until(lambda: pool.waiting == 1, "the realtime job waits in the pool")
            assert await queue.depth("p") == 0, "out of the queue's depth"
        else:  # the in-process queue takes a job only for a free slot
            await asyncio.sleep(0.2)
            assert (pool.waiting, await queue.depth("p")) == (0, 1)
        pool.finish("standard0")
        await pool.until(lambda: "realtime" in pool.running, "the realtime job takes the freed slot")
        assert pool.waiting == 0
    finally:
        pool.finish("realtime", *standard)
        await pool.stop()


async def test_interactive_jobs_alone_use_every_slot(queue: JobQueue) -> None:
    for index in range(5):
        await queue.enqueue(job(f"standard{index}", MESSAGE_PRIORITY["standard"]))
    pool = Pool(queue)
    try:
        await pool.until(lambda: len(pool.running) == 4, "4 standard jobs run")
        await asyncio.sleep(0.2)
        assert len(pool.running) == 4
    finally:
        pool.finish(*(f"standard{index}" for index in range(5)))
        await pool.stop()


async def test_each_kind_of_work_waits_in_its_own_queue_and_counts_in_the_depth(
        queue: JobQueue, topology: Topology) -> None:  # noqa: F811
    for name, priority in [("batch", BATCH_PRIORITY), ("bulk", BULK), ("standard", STANDARD), ("realtime", REALTIME)]:
        await queue.enqueue(job(name, priority))
    assert await queue.depth("p") == 4
    if isinstance(queue, RabbitJobQueue):
        async with await aio_pika.connect(BROKER_URL) as connection:
            channel = await connection.channel()
            counts = [(await channel.declare_queue(topology.job_queue("p", work), passive=True))
                      .declaration_result.message_count for work in Work]
        assert counts == [1, 1, 2]


async def test_a_stopping_pool_starts_none_of_the_jobs_waiting_for_a_slot(queue: JobQueue) -> None:
    names = ["bulk0", "bulk1", "bulk2", "standard0", "standard1"]
    for name in names:
        await queue.enqueue(job(name, BULK if name.startswith("bulk") else MESSAGE_PRIORITY["standard"]))
    pool = Pool(queue, drain_timeout=5)
    # 4 run; on RabbitMQ the 5th waits in the pool for a slot (it was pushed), in process in the queue.
    await pool.until(lambda: len(pool.running) == 4, "the pool is full")
    stopping = asyncio.create_task(pool.stop())
    await asyncio.sleep(0.2)
    assert not stopping.done(), "the jobs in hand are given the drain timeout"
    pool.finish(*names)
    await asyncio.wait_for(stopping, 5)
    assert len(pool.started) == 4, "the 5th, waiting for a slot, was not started"
    [waiting] = set(names) - set(pool.started)
    if isinstance(queue, MemoryJobQueue):
        assert await queue.depth("p") == 1, "it still waits in the queue"
        return
    again = Pool(queue)  # RabbitMQ: it was never acknowledged, so it is delivered again
    try:
        await again.until(lambda: again.started == [waiting], "the 5th is served by the next pool")
    finally:
        again.finish(waiting)
        await again.stop()
