"""In-process queues for the embedded mode: priority queues per provider
with their dead letters, and a usage queue. Same contracts as the RabbitMQ
ones."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

from scheduler.queues import USAGE_BATCH, DeadLetter, DeadLetterHandler, JobHandler, UsageHandler
from schema.errors import TransportUnavailable
from schema.jobs import Job, UsageEvent

log = logging.getLogger(__name__)


class MemoryJobQueue:
    """Like a RabbitMQ job queue with per-message TTLs: a job still waiting
    at its deadline leaves the queue for ``dead_letters`` (``expired``), and
    so does a job its handler fails on (``rejected``)."""

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.PriorityQueue[tuple[int, int, Job]]] = {}
        self._waiting: dict[str, dict[int, asyncio.TimerHandle]] = {}  # provider -> order -> its expiry
        self._order = itertools.count()
        self.dead_letters = MemoryDeadLetters()

    def _queue(self, provider: str) -> asyncio.PriorityQueue[tuple[int, int, Job]]:
        return self._queues.setdefault(provider, asyncio.PriorityQueue())

    async def enqueue(self, job: Job) -> None:
        order = next(self._order)
        waiting = self._waiting.setdefault(job.provider, {})
        waiting[order] = asyncio.get_running_loop().call_later(
            max(0.0, job.deadline - time.time()), self._expire, job, order)
        # Highest priority first, then first come first served.
        self._queue(job.provider).put_nowait((-job.priority, order, job))

    def _expire(self, job: Job, order: int) -> None:
        if self._waiting[job.provider].pop(order, None) is not None:
            self.dead_letters.put(DeadLetter(job, "expired", job.provider))

    async def depth(self, provider: str) -> int:
        return len(self._waiting.get(provider, {}))

    async def serve(self, provider: str, concurrency: int, handle: JobHandler, *, drain_timeout: float = 0) -> None:
        queue = self._queue(provider)
        waiting = self._waiting.setdefault(provider, {})
        slots = asyncio.Semaphore(concurrency)
        running: set[asyncio.Task[None]] = set()

        async def run(job: Job) -> None:
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
                slots.release()

        try:
            while True:
                await slots.acquire()
                _, order, job = await queue.get()
                expiry = waiting.pop(order, None)
                if expiry is None:  # it expired while it waited: dead-lettered already
                    slots.release()
                    continue
                expiry.cancel()
                task = asyncio.create_task(run(job), name=f"job {job.id}")
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
