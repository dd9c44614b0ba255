"""What every process can read about each provider's worker pool: jobs
waiting by priority, and the workers serving it (their concurrency, jobs in
hand and recent service rate), kept in this process (embedded mode,
``scheduler.pool_stats.memory``) or in Redis, shared by every ingress and
worker (distributed mode, ``scheduler.pool_stats.redis``).

RabbitMQ tells only a queue's total depth, so waiting jobs are counted here
by priority: +1 when a job is queued, -1 when a worker takes it (a
redelivery was taken once already and is not counted again). Jobs that
leave a queue without a worker taking them (expired at the head of the
queue and dead-lettered, or malformed) leave their count behind; readers
correct that drift against the broker's total (``scheduler.admission``).

Each serving pool writes a ``WorkerBeat`` every second that expires a few
seconds later, so a worker that was killed drops out of every view by
itself. Readers drop expired beats; clocks of the hosts are assumed to be
in step, as they are for job deadlines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    """One serving pool (a worker process serves one provider), as it last
    reported itself."""

    worker: str
    provider: str
    concurrency: int
    in_flight: int
    completed: int  # jobs finished since it started
    service_rate: float  # jobs finished per second over the recent window
    service_time: float | None  # seconds a job holds a slot (moving average); None: none finished yet
    expires_at: float
    # Jobs it took from the broker that wait in it for a slot (``scheduler.queues.slots``): still
    # counted waiting, but no longer in the broker's depth. Kept apart from the beat's JSON in Redis,
    # so a reader that knows no such field reads the beat as before.
    waiting: int = 0


@dataclass(frozen=True, slots=True)
class PoolCounts:
    """What the store holds about one provider's pool."""

    depth: dict[int, int] = field(default_factory=dict)  # counted waiting jobs by message priority
    workers: list[WorkerBeat] = field(default_factory=list)  # live beats only
    last_seen: float | None = None  # last beat of any worker, live or gone; None: never served


class PoolStatsStore(Protocol):
    async def count(self, deltas: Mapping[tuple[str, int], int]) -> None:
        """Add each delta to the jobs counted waiting for its (provider, priority)."""
        ...

    async def beat(self, beat: WorkerBeat) -> None: ...

    async def leave(self, provider: str, worker: str) -> None:
        """A pool stopped serving: drop its beat at once."""
        ...

    async def read(self, provider: str) -> PoolCounts: ...

    async def correct(self, provider: str, excess: dict[int, int]) -> None:
        """Take counted jobs away that the queue no longer holds (drift)."""
        ...


def live_beats(beats: list[WorkerBeat], now: float) -> list[WorkerBeat]:
    """The beats not yet expired, by worker."""
    return sorted((beat for beat in beats if beat.expires_at > now), key=lambda beat: beat.worker)
