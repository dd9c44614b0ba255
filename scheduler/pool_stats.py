"""What every process can read about each provider's worker pool: jobs
waiting by priority, and the workers serving it (their concurrency, jobs in
hand and recent service rate), kept in this process (embedded mode) or in
Redis, shared by every ingress and worker (distributed mode).

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

import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Protocol

import orjson
import redis.asyncio as redis

from scheduler.outages import reaching_redis
from scheduler.topology import Topology
from schema.errors import StoreUnavailable


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


def _live(beats: list[WorkerBeat], now: float) -> list[WorkerBeat]:
    return sorted((beat for beat in beats if beat.expires_at > now), key=lambda beat: beat.worker)


class MemoryPoolStats:
    def __init__(self) -> None:
        self._depth: dict[str, dict[int, int]] = {}
        self._beats: dict[str, dict[str, WorkerBeat]] = {}
        self._seen: dict[str, float] = {}

    async def count(self, deltas: Mapping[tuple[str, int], int]) -> None:
        for (provider, priority), delta in deltas.items():
            depth = self._depth.setdefault(provider, {})
            depth[priority] = depth.get(priority, 0) + delta

    async def beat(self, beat: WorkerBeat) -> None:
        self._beats.setdefault(beat.provider, {})[beat.worker] = beat
        self._seen[beat.provider] = time.time()

    async def leave(self, provider: str, worker: str) -> None:
        self._beats.get(provider, {}).pop(worker, None)

    async def read(self, provider: str) -> PoolCounts:
        beats = self._beats.get(provider, {})
        live = _live(list(beats.values()), time.time())
        for gone in set(beats) - {beat.worker for beat in live}:
            del beats[gone]
        return PoolCounts(dict(self._depth.get(provider, {})), live, self._seen.get(provider))

    async def correct(self, provider: str, excess: dict[int, int]) -> None:
        await self.count({(provider, priority): -count for priority, count in excess.items()})


class RedisPoolStats:
    """Per provider: a hash of counts by priority, a hash of worker beats
    (JSON) and the time of the last beat. A read is one round trip (two when
    it drops beats that expired)."""

    def __init__(self, client: redis.Redis, topology: Topology) -> None:
        self._client = client
        self._topology = topology

    async def count(self, deltas: Mapping[tuple[str, int], int]) -> None:
        with _reaching_stats():
            async with self._client.pipeline(transaction=False) as pipe:
                for (provider, priority), delta in deltas.items():
                    if delta:
                        pipe.hincrby(self._topology.pool_depth(provider), str(priority), delta)
                await pipe.execute()

    async def beat(self, beat: WorkerBeat) -> None:
        with _reaching_stats():
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hset(self._topology.pool_workers(beat.provider), beat.worker, orjson.dumps(asdict(beat)))
                pipe.set(self._topology.pool_seen(beat.provider), repr(time.time()))
                await pipe.execute()

    async def leave(self, provider: str, worker: str) -> None:
        with _reaching_stats():
            await self._client.hdel(self._topology.pool_workers(provider), worker)

    async def read(self, provider: str) -> PoolCounts:
        with _reaching_stats():
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self._topology.pool_depth(provider))
                pipe.hgetall(self._topology.pool_workers(provider))
                pipe.get(self._topology.pool_seen(provider))
                depth_raw, beats_raw, seen = await pipe.execute()
        beats = [WorkerBeat(**orjson.loads(raw)) for raw in beats_raw.values()]
        live = _live(beats, time.time())
        gone = {beat.worker for beat in beats} - {beat.worker for beat in live}
        if gone:
            with _reaching_stats():
                await self._client.hdel(self._topology.pool_workers(provider), *gone)
        depth = {int(priority): int(count) for priority, count in depth_raw.items()}
        return PoolCounts(depth, live, float(seen) if seen is not None else None)

    async def correct(self, provider: str, excess: dict[int, int]) -> None:
        # Relative, so jobs counted meanwhile by other processes are kept.
        with _reaching_stats():
            async with self._client.pipeline(transaction=False) as pipe:
                for priority, count in excess.items():
                    pipe.hincrby(self._topology.pool_depth(provider), str(priority), -count)
                await pipe.execute()


def _reaching_stats() -> AbstractContextManager[None]:
    return reaching_redis(StoreUnavailable, "the pool statistics' Redis")
