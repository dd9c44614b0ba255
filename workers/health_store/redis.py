"""Provider health in Redis, shared by every worker, prober and ingress
(distributed mode): a capped list of recent outcomes per provider and
source, and a key that hands out the prober's rounds."""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextlib import AbstractContextManager

import redis.asyncio as redis

from scheduler.outages import reaching_redis
from scheduler.topology import Topology
from schema.health import HEALTH_SOURCES, OUTCOMES_KEPT, OUTCOMES_WINDOW, Outcome
from workers.health_store import HealthUnavailable, Observed, Recent, fresh


def _reaching_redis() -> AbstractContextManager[None]:
    return reaching_redis(HealthUnavailable, "the health store's Redis")


class RedisHealthStore:
    def __init__(self, client: redis.Redis, topology: Topology) -> None:
        self._client = client
        self._topology = topology

    async def record(self, outcomes: Iterable[Observed]) -> None:
        """One round trip, however many outcomes: LPUSH each list's new
        outcomes at once, then trim it and renew its expiry."""
        lists: dict[str, list[str]] = {}
        for provider, source, outcome in outcomes:
            lists.setdefault(self._topology.health_key(provider, source), []).append(outcome.model_dump_json())
        with _reaching_redis():
            async with self._client.pipeline(transaction=True) as pipe:
                for key, added in lists.items():
                    pipe.lpush(key, *added)
                    pipe.ltrim(key, 0, OUTCOMES_KEPT - 1)
                    pipe.expire(key, int(OUTCOMES_WINDOW))
                await pipe.execute()

    async def recent(self, providers: Iterable[str]) -> Recent:
        pairs = [(provider, source) for provider in providers for source in HEALTH_SOURCES]
        if not pairs:
            return {}
        with _reaching_redis():
            async with self._client.pipeline(transaction=False) as pipe:
                for provider, source in pairs:
                    pipe.lrange(self._topology.health_key(provider, source), 0, OUTCOMES_KEPT - 1)
                lists = await pipe.execute()
        now = time.time()
        recent: Recent = {}
        for (provider, source), raw in zip(pairs, lists, strict=True):
            recent.setdefault(provider, {})[source] = fresh((Outcome.model_validate_json(item) for item in raw), now)
        return recent

    async def claim_round(self, chain: str, seconds: float) -> bool:
        with _reaching_redis():
            holder = await self._client.set(self._topology.probe_round_key, chain, nx=True, get=True,
                                            px=max(1, int(seconds * 1000)))
        return holder is None or holder == chain.encode()

    async def claim_successor(self, chain: str, number: int, seconds: float) -> bool:
        with _reaching_redis():
            return bool(await self._client.set(self._topology.probe_successor_key(chain, number), "1", nx=True,
                                               px=max(1, int(seconds * 1000))))

