"""A ``JobQueue`` that keeps the pool statistics (``scheduler.pool_stats``)
as jobs pass through it, around either transport:

- ``enqueue`` stamps the job's ``enqueued_at`` (its queue wait is measured
  from there) and counts it waiting at its priority;
- ``serve`` counts a job out when a worker takes it, meters how long each
  job holds a slot, and beats for the pool every second, with its
  concurrency, jobs in hand and service rate, until it stops serving.

Statistics are advice for admission and the operator: counting a job in
or out is done in the background, so a store that is down or stalls never
delays a request, a job or its settlement; a failure is logged, and the
count it loses is drift that readers correct (``scheduler.admission``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable

from scheduler.pool_stats import PoolStatsStore, WorkerBeat
from scheduler.queues import JobHandler, JobQueue
from scheduler.queues.slots import NO_RESERVE, Reserve
from schema.errors import TransportUnavailable
from schema.jobs import Job

log = logging.getLogger(__name__)

BEAT_INTERVAL = 1.0
BEAT_TTL = 3.0  # a killed worker disappears from every view this long after its last beat
RATE_WINDOW = 30.0  # seconds of finished jobs the service rate is measured over
SERVICE_TIME_WEIGHT = 0.2  # of the latest job in the moving average of service times
STORE_TIMEOUT = 2.0  # seconds one write to the statistics may take, whatever its client's own timeouts


class ServiceMeter:
    """One pool's jobs in hand, finished jobs over the last ``RATE_WINDOW``
    seconds, and a moving average of how long a job holds a slot."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.in_flight = 0
        self.waiting = 0  # jobs taken from the broker that wait for a slot
        self.completed = 0
        self.service_time: float | None = None
        self._started_at = time.monotonic()
        self._finished: deque[float] = deque()

    def take(self) -> float:
        self.in_flight += 1
        return time.monotonic()

    def finish(self, taken: float) -> None:
        now = time.monotonic()
        self.in_flight -= 1
        self.completed += 1
        held = now - taken
        self.service_time = held if self.service_time is None else (
            SERVICE_TIME_WEIGHT * held + (1 - SERVICE_TIME_WEIGHT) * self.service_time)
        self._finished.append(now)

    def rate(self) -> float:
        """Jobs finished per second over the window (or since the pool
        started, if that is shorter, but at least one second)."""
        now = time.monotonic()
        while self._finished and self._finished[0] < now - RATE_WINDOW:
            self._finished.popleft()
        return len(self._finished) / max(1.0, min(RATE_WINDOW, now - self._started_at))


class WatchedJobQueue:
    def __init__(self, jobs: JobQueue, stats: PoolStatsStore) -> None:
        self._jobs = jobs
        self._stats = stats
        self._counting: set[asyncio.Task[None]] = set()
        self._deltas: dict[tuple[str, int], int] = {}  # counted this tick, written together
        self._uncounted = False  # the last count failed: the next success is logged

    @property
    def stats(self) -> PoolStatsStore:
        return self._stats

    async def enqueue(self, job: Job) -> None:
        job.enqueued_at = time.time()
        await self._jobs.enqueue(job)
        self._count_later(job.provider, job.priority, 1)

    async def depth(self, provider: str) -> int:
        return await self._jobs.depth(provider)

    async def serve(self, provider: str, concurrency: int, handle: JobHandler, *, drain_timeout: float = 0,
                    reserve: Reserve = NO_RESERVE, waiting: Callable[[int], None] | None = None) -> None:
        meter = ServiceMeter(concurrency)

        def count_waiting(delta: int) -> None:  # in the pool's beat, and for the caller if it asked
            meter.waiting += delta
            if waiting is not None:
                waiting(delta)

        worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

        async def metered(job: Job, redelivered: bool) -> None:
            if not redelivered:  # a redelivery was counted out when it was first taken
                self._count_later(provider, job.priority, -1)
            taken = meter.take()
            try:
                await handle(job, redelivered)
            finally:
                meter.finish(taken)

        await self._beat(provider, worker, meter)  # seen before the first job is taken
        beating = asyncio.create_task(self._beating(provider, worker, meter), name=f"beats of {provider}")
        try:
            await self._jobs.serve(provider, concurrency, metered, drain_timeout=drain_timeout, reserve=reserve,
                                   waiting=count_waiting)
        finally:
            beating.cancel()
            await self.flush()
            try:
                async with asyncio.timeout(STORE_TIMEOUT):
                    await self._stats.leave(provider, worker)
            except (TransportUnavailable, TimeoutError) as error:  # its beat expires by itself
                log.warning("pool %s could not sign off from the pool statistics: %r", provider, error)

    async def flush(self) -> None:
        """Wait for the counts still being written (each takes at most
        ``STORE_TIMEOUT``; one that does not make it is drift)."""
        if self._counting:
            await asyncio.wait(set(self._counting))

    def _count_later(self, provider: str, priority: int, delta: int) -> None:
        """Count in the background: the counts of one event-loop tick are written together."""
        if not self._deltas:
            task = asyncio.create_task(self._count(), name="pool counts")
            self._counting.add(task)  # a strong reference until it is written
            task.add_done_callback(self._counting.discard)
        self._deltas[(provider, priority)] = self._deltas.get((provider, priority), 0) + delta

    async def _count(self) -> None:
        await asyncio.sleep(0)  # the rest of this tick's counts join
        deltas, self._deltas = self._deltas, {}
        provider = next(iter(deltas))[0] if deltas else ""
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                await self._stats.count(deltas)
        except (TransportUnavailable, TimeoutError) as error:  # each only blurs the statistics
            if not self._uncounted:  # once per outage, not once per job
                log.warning("queue depth of %s not counted (%r); jobs are not counted until the pool "
                            "statistics are back", provider, error)
            self._uncounted = True
            return
        if self._uncounted:
            self._uncounted = False
            log.warning("the pool statistics are back: jobs are counted again")

    async def _beat(self, provider: str, worker: str, meter: ServiceMeter) -> None:
        beat = WorkerBeat(worker=worker, provider=provider, concurrency=meter.concurrency,
                          in_flight=meter.in_flight, completed=meter.completed, service_rate=meter.rate(),
                          service_time=meter.service_time, expires_at=time.time() + BEAT_TTL,
                          waiting=meter.waiting)
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                await self._stats.beat(beat)
        except (TransportUnavailable, TimeoutError) as error:  # the pool looks gone until the store is back
            log.warning("pool %s could not report itself (%r)", provider, error)

    async def _beating(self, provider: str, worker: str, meter: ServiceMeter) -> None:
        while True:
            await asyncio.sleep(BEAT_INTERVAL)
            await self._beat(provider, worker, meter)
