"""The in-process transports keep the contracts of the real ones."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest

from scheduler.queues import DeadLetter
from scheduler.queues.memory import MemoryJobQueue
from scheduler.result_bus import INBOX_SIZE
from scheduler.result_bus.memory import MemoryResultBus
from schema.errors import StreamBroken
from schema.jobs import Job, Price, Route


def job(priority: int, name: str) -> Job:
    return Job(account_id=1, key_id=1, model=name, routes=[Route(provider="p", upstream_model="m")],
               payload={}, priority=priority, deadline=time.time() + 60, price=Price(input_per_mtok=Decimal(0)))


async def test_higher_priority_first_then_fifo() -> None:
    queue = MemoryJobQueue()
    for priority, name in [(1, "bulk-1"), (3, "urgent-1"), (2, "std-1"), (3, "urgent-2"), (1, "bulk-2")]:
        await queue.enqueue(job(priority, name))
    served: list[str] = []
    done = asyncio.Event()

    async def handle(item: Job, redelivered: bool) -> None:
        served.append(item.model)
        if len(served) == 5:
            done.set()

    server = asyncio.create_task(queue.serve("p", 1, handle))
    await asyncio.wait_for(done.wait(), 5)
    server.cancel()
    assert served == ["urgent-1", "urgent-2", "std-1", "bulk-1", "bulk-2"]


async def test_concurrency_bounds_jobs_in_hand() -> None:
    queue = MemoryJobQueue()
    for index in range(10):
        await queue.enqueue(job(0, str(index)))
    in_hand, most = 0, 0
    finished = asyncio.Event()
    count = 0

    async def handle(item: Job, redelivered: bool) -> None:
        nonlocal in_hand, most, count
        in_hand += 1
        most = max(most, in_hand)
        await asyncio.sleep(0.01)
        in_hand -= 1
        count += 1
        if count == 10:
            finished.set()

    server = asyncio.create_task(queue.serve("p", 3, handle))
    await asyncio.wait_for(finished.wait(), 5)
    server.cancel()
    assert most == 3


async def test_pubsub_keeps_nothing_for_late_subscribers_and_orders_events() -> None:
    bus = MemoryResultBus()
    await bus.publish({"job": "j", "seq": 0, "kind": "chunk", "data": {}})  # nobody listening: gone
    inbox = await bus.subscribe("j")
    for seq in range(3):
        await bus.publish({"job": "j", "seq": seq, "kind": "chunk", "data": {}})
    assert [(await inbox.next(1))["seq"] for _ in range(3)] == [0, 1, 2]
    await inbox.close()
    await bus.publish({"job": "j", "seq": 3, "kind": "chunk", "data": {}})
    with pytest.raises(TimeoutError):
        await inbox.next(0.05)


async def test_a_client_that_cannot_keep_up_fails_alone() -> None:
    bus = MemoryResultBus()
    slow, other = await bus.subscribe("slow"), await bus.subscribe("other")
    for seq in range(INBOX_SIZE + 1):
        await bus.publish({"job": "slow", "seq": seq, "kind": "chunk", "data": {}})
    await bus.publish({"job": "other", "seq": 0, "kind": "end", "data": {}})
    with pytest.raises(StreamBroken, match="not reading"):
        await slow.next(1)
    assert (await other.next(1))["kind"] == "end"


async def test_a_job_still_waiting_at_its_deadline_is_dead_lettered_not_served() -> None:
    queue = MemoryJobQueue()
    doomed = job(2, "doomed").model_copy(update={"deadline": time.time() + 0.05})
    await queue.enqueue(doomed)
    await queue.enqueue(job(2, "alive"))
    letters: list[DeadLetter] = []

    async def read(letter: DeadLetter) -> None:
        letters.append(letter)

    reading = asyncio.create_task(queue.dead_letters.serve(read))
    await asyncio.sleep(0.2)
    assert letters == [DeadLetter(doomed, "expired", "p")]
    assert await queue.depth("p") == 1, "only the job still waiting counts"

    served: list[str] = []
    done = asyncio.Event()

    async def handle(item: Job, redelivered: bool) -> None:
        served.append(item.model)
        done.set()

    server = asyncio.create_task(queue.serve("p", 1, handle))
    await asyncio.wait_for(done.wait(), 5)
    await asyncio.sleep(0.1)  # the expired job's copy is passed over: nothing else comes
    for task in (server, reading):
        task.cancel()
    assert served == ["alive"]
    assert await queue.depth("p") == 0


async def test_a_job_its_handler_fails_on_is_dead_lettered_as_rejected() -> None:
    queue = MemoryJobQueue()
    failed = job(2, "failing")
    await queue.enqueue(failed)

    async def handle(item: Job, redelivered: bool) -> None:
        raise RuntimeError("the usage queue is unreachable")

    letters: list[DeadLetter] = []
    got = asyncio.Event()

    async def read(letter: DeadLetter) -> None:
        letters.append(letter)
        got.set()

    tasks = [asyncio.create_task(queue.serve("p", 1, handle)), asyncio.create_task(queue.dead_letters.serve(read))]
    await asyncio.wait_for(got.wait(), 5)
    for task in tasks:
        task.cancel()
    assert letters == [DeadLetter(failed, "rejected", "p")]


async def test_a_dead_letter_whose_reading_fails_is_read_again() -> None:
    queue = MemoryJobQueue()
    queue.dead_letters.RETRY_DELAY = 0.01
    letter = DeadLetter(job(2, "x"), "expired", "p")
    tries: list[DeadLetter] = []
    read = asyncio.Event()

    async def flaky(item: DeadLetter) -> None:
        tries.append(item)
        if len(tries) < 3:
            raise RuntimeError("the usage queue is unreachable")
        read.set()

    queue.dead_letters.put(letter)
    reading = asyncio.create_task(queue.dead_letters.serve(flaky))
    await asyncio.wait_for(read.wait(), 5)
    reading.cancel()
    assert tries == [letter] * 3
