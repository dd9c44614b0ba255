"""In-process queues for the embedded mode: priority queues per provider
with their dead letters, and a usage queue. Same contracts as the RabbitMQ
ones: like there, a provider's low work (bulk and batch) waits in a queue of
its own, so a pool can take interactive jobs past it when low work holds
all the slots it may (``scheduler.queues.slots``)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

from scheduler.priority import is_low
from scheduler.queues import USAGE_BATCH, DeadLetter, DeadLetterHandler, JobHandler, UsageHandler
from scheduler.queues.slots import low_share
from schema.errors import TransportUnavailable
from schema.jobs import Job, UsageEvent

log = logging.getLogger(__name__)


class MemoryJobQueue:
    """Like a RabbitMQ job queue with per-message TTLs: a job still waiting
    at its deadline leaves the queue for ``dead_letters`` (``expired``), and
    so does a job its handler fails on (``rejected``)."""

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.PriorityQueue[tuple[int, int, Job]]] = {}
        self._low: dict[str, asyncio.PriorityQueue[tuple[int, int, Job]]] = {}
        self._arrived: dict[str, asyncio.Event] = {}  # set by every enqueue, and when a slot frees
        self._waiting: dict[str, dict[int, asyncio.TimerHandle]] = {}  # provider -> order -> its expiry
        self._order = itertools.count()
        self.dead_letters = MemoryDeadLetters()

    def _queue(self, provider: str) -> asyncio.PriorityQueue[tuple[int, int, Job]]:
        """``provider``'s realtime and standard jobs."""
        return self._queues.setdefault(provider, asyncio.PriorityQueue())

    def _low_queue(self, provider: str) -> asyncio.PriorityQueue[tuple[int, int, Job]]:
        """``provider``'s bulk and batch jobs."""
        return self._low.setdefault(provider, asyncio.PriorityQueue())

    def _arrival(self, provider: str) -> asyncio.Event:
        return self._arrived.setdefault(provider, asyncio.Event())

    async def enqueue(self, job: Job) -> None:
        order = next(self._order)
        waiting = self._waiting.setdefault(job.provider, {})
        waiting[order] = asyncio.get_running_loop().call_later(
            max(0.0, job.deadline - time.time()), self._expire, job, order)
        # Highest priority first, then first come first served.
        queue = self._low_queue(job.provider) if is_low(job.priority) else self._queue(job.provider)
        queue.put_nowait((-job.priority, order, job))
        self._arrival(job.provider).set()

    def _expire(self, job: Job, order: int) -> None:
        if self._waiting[job.provider].pop(order, None) is not None:
            self.dead_letters.put(DeadLetter(job, "expired", job.provider))

    async def depth(self, provider: str) -> int:
        return len(self._waiting.get(provider, {}))

    async def serve(self, provider: str, concurrency: int, handle: JobHandler, *, drain_timeout: float = 0,
                    reserved: int = 0) -> None:
        interactive, low = self._queue(provider), self._low_queue(provider)
        arrived = self._arrival(provider)
        waiting = self._waiting.setdefault(provider, {})
        free, low_free = concurrency, low_share(concurrency, reserved)  # slots, and those low work may still take
        running: set[asyncio.Task[None]] = set()

        async def run(job: Job, is_low_work: bool) -> None:
            nonlocal free, low_free
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
                low_free += is_low_work
                arrived.set()

        try:
            while True:
                # An interactive job takes any free slot; a low one only while
                # low work holds fewer than its share, else it waits at the
                # head of its queue and interactive jobs pass it.
                if free and not interactive.empty():
                    is_low_work = False
                    _, order, job = interactive.get_nowait()
                elif free and low_free and not low.empty():
                    is_low_work = True
                    _, order, job = low.get_nowait()
                else:
                    arrived.clear()
                    await arrived.wait()
                    continue
                expiry = waiting.pop(order, None)
                if expiry is None:  # it expired while it waited: dead-lettered already
                    continue
                expiry.cancel()
                free -= 1
                low_free -= is_low_work
                task = asyncio.create_task(run(job, is_low_work), name=f"job {job.id}")
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            if running and drain_timeout > 0:
                await asyncio.wait(set(running), timeout=drain_timeout)
            for task in running:
                task.cancel()


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
