"""In-process queues for the embedded mode: priority queues per provider
with their dead letters, and a usage queue. Same contracts as the RabbitMQ
ones: like there, each kind of a provider's work (realtime, standard, low)
waits in a queue of its own, so a pool can take a higher kind past a lower
one that holds all the slots it may (``scheduler.queues.slots``)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable

from scheduler.priority import Work, work_of
from scheduler.queues import USAGE_BATCH, DeadLetter, DeadLetterHandler, JobHandler, UsageHandler
from scheduler.queues.slots import NO_RESERVE, Reserve
from schema.errors import TransportUnavailable
from schema.jobs import Job, UsageEvent

log = logging.getLogger(__name__)


class MemoryJobQueue:
    """Like a RabbitMQ job queue with per-message TTLs: a job still waiting
    at its deadline leaves the queue for ``dead_letters`` (``expired``), and
    so does a job its handler fails on (``rejected``)."""

    def __init__(self) -> None:
        # Per provider, a priority queue for each kind of work (``Work``).
        self._queues: dict[str, tuple[asyncio.PriorityQueue[tuple[int, int, Job]], ...]] = {}
        self._arrived: dict[str, asyncio.Event] = {}  # set by every enqueue, and when a slot frees
        self._waiting: dict[str, dict[int, asyncio.TimerHandle]] = {}  # provider -> order -> its expiry
        self._order = itertools.count()
        self.dead_letters = MemoryDeadLetters()

    def _queues_of(self, provider: str) -> tuple[asyncio.PriorityQueue[tuple[int, int, Job]], ...]:
        queues = self._queues.get(provider)
        if queues is None:
            queues = self._queues[provider] = tuple(asyncio.PriorityQueue() for _ in Work)
        return queues

    def _arrival(self, provider: str) -> asyncio.Event:
        return self._arrived.setdefault(provider, asyncio.Event())

    async def enqueue(self, job: Job) -> None:
        order = next(self._order)
        waiting = self._waiting.setdefault(job.provider, {})
        waiting[order] = asyncio.get_running_loop().call_later(
            max(0.0, job.deadline - time.time()), self._expire, job, order)
        # Highest priority first, then first come first served.
        self._queues_of(job.provider)[work_of(job.priority)].put_nowait((-job.priority, order, job))
        self._arrival(job.provider).set()

    def _expire(self, job: Job, order: int) -> None:
        if self._waiting[job.provider].pop(order, None) is not None:
            self.dead_letters.put(DeadLetter(job, "expired", job.provider))

    async def depth(self, provider: str) -> int:
        return len(self._waiting.get(provider, {}))

    async def serve(self, provider: str, concurrency: int, handle: JobHandler, *, drain_timeout: float = 0,
                    reserve: Reserve = NO_RESERVE, waiting: Callable[[int], None] | None = None) -> None:
        # A job leaves its queue only for a free slot: none waits in the pool, so ``waiting`` is never told.
        queues = self._queues_of(provider)
        arrived = self._arrival(provider)
        expiries = self._waiting.setdefault(provider, {})
        # Slots free, and those each kind of work (with the kinds below it) may still take.
        free, room = concurrency, [reserve.share(concurrency, work) for work in Work]
        running: set[asyncio.Task[None]] = set()

        async def run(job: Job, work: Work) -> None:
            nonlocal free
            try:
                await handle(job, False)
            except TransportUnavailable as error:
                log.error("job %s: %s; dead-lettered", job.id, error.message)
                self.dead_letters.put(DeadLetter(job, "rejected", provider))
            except Exception:
                # A defect in the handler: the job must still reach the dead
                # letters, which settle it, and the queue serve on.
                log.exception("job %s failed in its handler; dead-lettered", job.id)
                self.dead_letters.put(DeadLetter(job, "rejected", provider))
            finally:
                free += 1
                for kind in range(work, 0, -1):
                    room[kind] += 1
                arrived.set()

        try:
            while True:
                work = _next_work(queues, free, room)
                if work is None:
                    arrived.clear()
                    await arrived.wait()
                    continue
                _, order, job = queues[work].get_nowait()
                expiry = expiries.pop(order, None)
                if expiry is None:  # it expired while it waited: dead-lettered already
                    continue
                expiry.cancel()
                free -= 1
                for kind in range(work, 0, -1):
                    room[kind] -= 1
                task = asyncio.create_task(run(job, work), name=f"job {job.id}")
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            if running and drain_timeout > 0:
                await asyncio.wait(set(running), timeout=drain_timeout)
            for task in running:
                task.cancel()


def _next_work(queues: tuple[asyncio.PriorityQueue[tuple[int, int, Job]], ...], free: int,
               room: list[int]) -> Work | None:
    """The highest kind of work with a job waiting and room for it, which
    takes a free slot; a kind without room waits at the head of its queue,
    and the kinds above it pass."""
    if not free:
        return None
    realtime, standard, low = queues
    if not realtime.empty():
        return Work.REALTIME
    if room[Work.STANDARD] and not standard.empty():
        return Work.STANDARD
    if room[Work.STANDARD] and room[Work.LOW] and not low.empty():
        return Work.LOW
    return None


class MemoryDeadLetters:
    RETRY_DELAY = 1.0
    MAX_TRIES = 10

    def __init__(self) -> None:
        self._letters: asyncio.Queue[tuple[int, DeadLetter]] = asyncio.Queue()

    def put(self, letter: DeadLetter) -> None:
        self._letters.put_nowait((0, letter))

    async def serve(self, handle: DeadLetterHandler) -> None:
        while True:
            failed, letter = await self._letters.get()
            try:
                await handle(letter)
            except Exception:
                # Whatever failed (the database, or a defect: logged with its
                # traceback), the reader must go on and read it again later.
                if failed + 1 >= self.MAX_TRIES:
                    # Nowhere to park it in a process: its hold is left to the sweeper.
                    log.exception("dead letter of job %s failed %d times; dropped", letter.job.id, failed + 1)
                    continue
                log.exception("dead letter of job %s failed; retrying", letter.job.id)
                await asyncio.sleep(self.RETRY_DELAY)
                self._letters.put_nowait((failed + 1, letter))


class MemoryUsageQueue:
    RETRY_DELAY = 1.0

    def __init__(self) -> None:
        self._events: asyncio.Queue[UsageEvent] = asyncio.Queue()

    async def publish(self, event: UsageEvent) -> None:
        self._events.put_nowait(event)

    async def serve(self, handle: UsageHandler) -> None:
        while True:
            batch = [await self._events.get()]
            while len(batch) < USAGE_BATCH and not self._events.empty():
                batch.append(self._events.get_nowait())
            try:
                await handle(batch)
            except Exception:
                # Whatever failed (the database, or a defect: logged with its
                # traceback), the batch is kept for a retry, never lost.
                log.exception("settling %d jobs (%s …) failed; retrying", len(batch), batch[0].job_id)
                await asyncio.sleep(self.RETRY_DELAY)
                for event in batch:
                    self._events.put_nowait(event)

    def pending(self) -> int:
        return self._events.qsize()
