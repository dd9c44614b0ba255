"""Pool statistics in Redis, shared by every ingress and worker
(distributed mode)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict

import orjson
import redis.asyncio as redis

from scheduler.outages import reaching_redis
from scheduler.pool_stats import PoolCounts, WorkerBeat, live_beats
from scheduler.topology import Topology
from schema.errors import StoreUnavailable


class RedisPoolStats:
    """Per provider: a hash of counts by priority, a hash of worker beats
    (JSON, without ``waiting``), a hash of each worker's jobs waiting in it,
    and the time of the last beat. A read is one round trip (two when it
    drops beats that expired)."""

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
                fields = asdict(beat)
                waiting = fields.pop("waiting")
                pipe.hset(self._topology.pool_workers(beat.provider), beat.worker, orjson.dumps(fields))
                pipe.hset(self._topology.pool_waiting(beat.provider), beat.worker, waiting)
                pipe.set(self._topology.pool_seen(beat.provider), repr(time.time()))
                await pipe.execute()

    async def leave(self, provider: str, worker: str) -> None:
        await self._drop(provider, {worker})

    async def _drop(self, provider: str, workers: set[str]) -> None:
        with _reaching_stats():
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hdel(self._topology.pool_workers(provider), *workers)
                pipe.hdel(self._topology.pool_waiting(provider), *workers)
                await pipe.execute()

    async def read(self, provider: str) -> PoolCounts:
        with _reaching_stats():
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self._topology.pool_depth(provider))
                pipe.hgetall(self._topology.pool_workers(provider))
                pipe.get(self._topology.pool_seen(provider))
                pipe.hgetall(self._topology.pool_waiting(provider))
                depth_raw, beats_raw, seen, waiting_raw = await pipe.execute()
        waiting = {worker.decode(): int(count) for worker, count in waiting_raw.items()}
        beats = [WorkerBeat(**orjson.loads(raw), waiting=waiting.get(worker.decode(), 0))
                 for worker, raw in beats_raw.items()]
        live = live_beats(beats, time.time())
        gone = {beat.worker for beat in beats} - {beat.worker for beat in live}
        if gone:
            await self._drop(provider, gone)
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
