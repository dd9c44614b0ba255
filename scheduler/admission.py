"""Admission control: estimate how long a new job would wait in its
provider's queue, and refuse it at once when that is longer than it may
wait (its queue deadline), instead of letting it time out in the queue.

The estimate for a job at priority ``p``: the jobs that start before it
are those waiting at ``p`` or higher; the pool's free slots take the first
of them at once, and the rest drain at the pool's rate. So with ``a`` jobs
ahead, ``f`` free slots (none while any job waits) and rate ``r``, the wait
is 0 when ``a < f`` and ``(a - f + 1) / r`` otherwise. The rate is the higher of the measured one
(jobs finished per second, recently) and what the pool's concurrency gives
at its recent service time (``concurrency / service_time``, with
``default_service_time`` for a pool that has finished nothing yet): an
idle pool has measured nothing but can still serve.

A class's queue deadline is a setting (``GATEWAYZ_QUEUE_DEADLINE_*``); a
request may set its own with ``x-gatewayz-max-queue-ms`` (longer or
shorter), never past its request deadline. A refusal is a 503 with a
``retry-after``: the time the queue needs to drain to where the job would
fit. A provider with no worker is served when one comes (a pool restarting
or not started yet); one whose workers have all been gone for
``pool_gone_after`` seconds is refused at once.

``PoolWatch`` gives each process cached views of the pools (at most
``max_age`` old), so admission costs no round trip on most requests; a
refusal is decided on a fresh view.

A view is read from two stores, the broker (the queue's total depth, to
which the workers' beats add the jobs they hold for a slot) and the pool
statistics (Redis in distributed mode); either may fail or, worse,
hang (a partitioned broker answers nothing until its heartbeat gives up).
A read is waited for ``read_timeout`` seconds at most, counted from when it
began, so in an outage one request waits that long and the others none. The
read itself goes on, shared, until it ends or ``READ_LIMIT`` passes (a
connection that hangs for good; cancelling sooner would give up reads that
are merely slow under load, and a queue declare cancelled closes the broker
channel that jobs are published on). Without a view there is no estimate to
refuse on: admission admits, as a gateway without admission control would,
and says so in the log once per outage.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

from scheduler.pool_stats import PoolCounts, PoolStatsStore, WorkerBeat
from scheduler.priority import MESSAGE_PRIORITY
from scheduler.queues import JobQueue
from schema.errors import InvalidRequest, ServiceUnavailable, TransportUnavailable
from schema.plans import PriorityClass
from schema.settings import Settings

log = logging.getLogger(__name__)

MAX_QUEUE_HEADER = "x-gatewayz-max-queue-ms"
# About 24.8 days, past any request deadline; a bound keeps ``/ 1000`` from overflowing a float.
MAX_QUEUE_MS = 2**31 - 1
LOWEST_CLASS = min(MESSAGE_PRIORITY.values())  # the message priority of the lowest class a request can choose
READ_LIMIT = 5.0  # seconds a read may hang before it is given up, so that the next one starts afresh
DRIFT_CONFIRM = 1.0  # seconds counted jobs must outlive an empty queue before they are taken as drift


class QueueFull(ServiceUnavailable):
    """The job would wait longer than its queue deadline."""

    code = "queue_full"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NoWorkers(ServiceUnavailable):
    """Nobody has served the provider's queue for a while."""

    code = "no_workers"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PoolUnreadable(ServiceUnavailable):
    """Neither a fresh view of the pool nor an estimate: a store failed or
    did not answer in time."""

    code = "pool_statistics_unavailable"


@dataclass(frozen=True, slots=True)
class PoolView:
    """One provider's pool as a process sees it."""

    provider: str
    depth: dict[int, int]  # waiting jobs by message priority (corrected against the total)
    total_depth: int  # waiting jobs, as the queue counts them, and those its workers hold for a slot
    workers: list[WorkerBeat] = field(default_factory=list)
    last_seen: float | None = None
    read_at: float = 0.0

    @property
    def consumers(self) -> int:
        return len(self.workers)

    @property
    def concurrency(self) -> int:
        return sum(worker.concurrency for worker in self.workers)

    @property
    def in_flight(self) -> int:
        return sum(worker.in_flight for worker in self.workers)

    @property
    def service_rate(self) -> float:
        return sum(worker.service_rate for worker in self.workers)

    @property
    def service_time(self) -> float | None:
        """Seconds a job holds a slot, averaged over the workers that know."""
        known = [(worker.service_time, worker.concurrency) for worker in self.workers
                 if worker.service_time is not None]
        if not known:
            return None
        return sum(seconds * weight for seconds, weight in known) / sum(weight for _, weight in known)


def drain_rate(view: PoolView, default_service_time: float) -> float:
    """Jobs per second the pool takes from its queue while it is saturated."""
    capacity = view.concurrency / (view.service_time or default_service_time)
    return max(view.service_rate, capacity)


def estimated_wait(view: PoolView, priority: int, default_service_time: float) -> float | None:
    """Seconds a job queued now at ``priority`` would wait for a worker;
    None when no worker serves the pool (it waits for one to come)."""
    if view.consumers == 0:
        return None
    ahead = sum(count for level, count in view.depth.items() if level >= priority)
    # Jobs waiting at all mean no slot is free (a pool takes as many as it
    # has slots); the beats' in-flight counts lag by up to a second.
    free = max(0, view.concurrency - view.in_flight) if view.total_depth == 0 else 0
    if ahead < free:
        return 0.0
    return (ahead - free + 1) / drain_rate(view, default_service_time)


def queue_deadline(settings: Settings, priority_class: PriorityClass, header: str | None) -> float:
    """Seconds the job may wait in its queue: the request's header or its class's default."""
    if header is None:
        return {"realtime": settings.queue_deadline_realtime, "standard": settings.queue_deadline_standard,
                "bulk": settings.queue_deadline_bulk}[priority_class]
    try:
        milliseconds = int(header.strip())
    except ValueError:
        milliseconds = -1
    if not 0 <= milliseconds <= MAX_QUEUE_MS:
        raise InvalidRequest(f"{MAX_QUEUE_HEADER} must be a whole number of milliseconds from 0 to {MAX_QUEUE_MS}, "
                             f"not {header[:40]!r}", param=MAX_QUEUE_HEADER)
    return milliseconds / 1000


def judge(view: PoolView, priority: int, deadline: float, *, default_service_time: float, gone_after: float,
          now: float) -> None:
    """Raise ``QueueFull`` or ``NoWorkers`` if the job should not be queued."""
    wait = estimated_wait(view, priority, default_service_time)
    if wait is None:
        if view.last_seen is not None and now - view.last_seen > gone_after:
            raise NoWorkers(f"no worker has served provider {view.provider!r} for {now - view.last_seen:.0f}s; "
                            f"please retry later", retry_after=max(1, math.ceil(gone_after)))
        return
    if wait > deadline:
        raise QueueFull(f"provider {view.provider!r} is saturated: the estimated queue wait is {wait:.1f}s, "
                        f"longer than this request's queue deadline of {deadline:g}s ({MAX_QUEUE_HEADER})",
                        retry_after=max(1, math.ceil(wait - deadline)))


def corrected(counts: PoolCounts, total: int) -> dict[int, int]:
    """Counted depth by priority, made to add up to the queue's own total.

    Counts the queue no longer holds (drift: jobs that expired in it, a
    count out whose count in was lost) are taken from the lowest priorities.
    Jobs it holds that were never counted (a count lost in a Redis outage, a
    Redis restarted empty) are taken as waiting at the lowest class's
    priority: that class waits behind every job, so its estimate stays
    exact, and no higher class is refused for jobs that may not be ahead of it.
    """
    depth = {level: count for level, count in sorted(counts.depth.items()) if count > 0}
    excess = sum(depth.values()) - total
    for level in sorted(depth):
        if excess <= 0:
            break
        taken = min(excess, depth[level])
        depth[level] -= taken
        excess -= taken
    if excess < 0:
        depth[LOWEST_CLASS] = depth.get(LOWEST_CLASS, 0) - excess
    return {level: count for level, count in sorted(depth.items()) if count > 0}


class PoolWatch:
    def __init__(self, jobs: JobQueue, stats: PoolStatsStore, settings: Settings, *, max_age: float = 0.5,
                 read_timeout: float = 0.5) -> None:
        self._jobs = jobs
        self._stats = stats
        self._settings = settings
        self._max_age = max_age
        self._read_timeout = read_timeout
        self._views: dict[str, PoolView] = {}
        self._reading: dict[str, tuple[asyncio.Task[PoolView], float]] = {}  # the read and when it began
        self._empty_since: dict[str, tuple[float, dict[int, int]]] = {}
        self._blind_since: float | None = None  # when the pool statistics became unreadable

    async def view(self, provider: str, *, max_age: float | None = None,
                   read_timeout: float | None = None) -> PoolView:
        """The pool as last read, if at most ``max_age`` seconds old; one read
        at a time per provider, shared by everyone who waits for it until
        ``read_timeout`` (the admission budget unless given) after it began.
        Raises ``PoolUnreadable``."""
        limit = self._max_age if max_age is None else max_age
        kept = self._views.get(provider)
        if kept is not None and time.monotonic() - kept.read_at <= limit:
            return kept
        reading, began = self._reading.get(provider) or self._start_read(provider)
        waited = self._read_timeout if read_timeout is None else read_timeout
        remaining = began + waited - time.monotonic()
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                return await asyncio.shield(reading)
        except TimeoutError:
            raise PoolUnreadable(f"the pool statistics of {provider!r} did not answer within "
                                 f"{waited:g}s") from None
        except TransportUnavailable as error:  # the pool statistics or the broker
            raise PoolUnreadable(f"the pool statistics of {provider!r} cannot be read "
                                 f"({type(error).__name__}: {error.message})") from error

    def _start_read(self, provider: str) -> tuple[asyncio.Task[PoolView], float]:
        reading = asyncio.create_task(self._read(provider), name=f"pool view of {provider}")
        # Retrieve a failure nobody waited for, so it is not reported as never retrieved.
        reading.add_done_callback(lambda task: task.cancelled() or task.exception())
        reading.add_done_callback(lambda _: self._reading.pop(provider, None))
        self._reading[provider] = (reading, time.monotonic())
        return self._reading[provider]

    async def admit(self, provider: str, priority: int, deadline: float) -> None:
        """Refuse (``QueueFull``, ``NoWorkers``) a job that should not be
        queued; a refusal is always decided on a view read just now."""
        if not self._settings.admission_control:
            return
        settings = self._settings
        for max_age in (None, 0.0):
            try:
                view = await self.view(provider, max_age=max_age)
            except PoolUnreadable as error:
                # Without statistics there is no estimate to refuse on: admit,
                # as a gateway without admission control would.
                if self._blind_since is None:
                    self._blind_since = time.monotonic()
                    log.warning("%s: admitting without a queue-wait estimate", error)
                return
            if self._blind_since is not None:
                self._blind_since = None
                log.warning("pool statistics readable again: admission control is back")
            try:
                judge(view, priority, deadline, default_service_time=settings.default_service_time,
                      gone_after=settings.pool_gone_after, now=time.time())
                return
            except ServiceUnavailable:
                if max_age == 0.0 or time.monotonic() - view.read_at < 0.05:
                    raise

    def estimates(self, view: PoolView, priorities: dict[PriorityClass, int]) -> dict[PriorityClass, float | None]:
        return {name: estimated_wait(view, level, self._settings.default_service_time)
                for name, level in priorities.items()}

    async def _read(self, provider: str) -> PoolView:
        async with asyncio.timeout(READ_LIMIT):
            counts, queued = await asyncio.gather(self._stats.read(provider), self._jobs.depth(provider))
            # Jobs a worker took from the broker and holds for a slot still wait, out of the queue's count.
            total = queued + sum(worker.waiting for worker in counts.workers)
            await self._forget_drift(provider, counts, total)
        view = PoolView(provider, corrected(counts, total), total, counts.workers, counts.last_seen,
                        read_at=time.monotonic())
        self._views[provider] = view
        return view

    async def _forget_drift(self, provider: str, counts: PoolCounts, total: int) -> None:
        """Counts left behind while the queue stays empty are drift (jobs
        expired or dead-lettered in the queue): take them away, relatively,
        once seen twice ``DRIFT_CONFIRM`` seconds apart."""
        left = {level: count for level, count in counts.depth.items() if count != 0}
        if total > 0 or not left:
            self._empty_since.pop(provider, None)
            return
        first = self._empty_since.get(provider)
        if first is None:
            self._empty_since[provider] = (time.monotonic(), left)
            return
        since, seen = first
        if time.monotonic() - since < DRIFT_CONFIRM:
            return
        # Only what stayed in both readings: a job counted since is not drift.
        excess = {level: _toward_zero(seen.get(level, 0), count) for level, count in left.items()}
        excess = {level: count for level, count in excess.items() if count != 0}
        del self._empty_since[provider]
        if excess:
            log.info("pool %s: %s jobs counted waiting that its empty queue does not hold; forgotten", provider,
                     excess)
            try:
                await self._stats.correct(provider, excess)
            except TransportUnavailable as error:  # tried again at the next reading
                log.warning("pool %s: the drift could not be corrected (%s)", provider, error.message)


def _toward_zero(first: int, second: int) -> int:
    """The part of two readings of one count that both share (same sign)."""
    if first > 0 and second > 0:
        return min(first, second)
    if first < 0 and second < 0:
        return max(first, second)
    return 0
