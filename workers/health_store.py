"""Where provider health lives: the recent outcomes of each provider, from
requests and from probes, in this process (embedded mode) or in Redis,
shared by every worker, prober and ingress (distributed mode).

Each provider and source keeps its last ``OUTCOMES_KEPT`` outcomes, none
older than ``OUTCOMES_WINDOW``. The store also hands out the prober's rounds
(``claim_round``), so that however many probe chains a restart leaves
behind, one round runs per interval.

The memory store is shared by the ingress's event loop and the prober's
(dramatiq runs async actors on a loop of its own, in another thread), so it
takes a thread lock around each operation, none of which waits on I/O.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import NamedTuple, Protocol

import redis.asyncio as redis

from scheduler.outages import reaching_redis
from scheduler.topology import Topology
from schema.errors import StoreUnavailable
from schema.health import (
    HEALTH_SOURCES,
    OUTCOMES_KEPT,
    OUTCOMES_WINDOW,
    HealthSource,
    Outcome,
)

Recent = dict[str, dict[HealthSource, list[Outcome]]]  # provider -> source -> outcomes, newest first


class Observed(NamedTuple):
    """One outcome to record, and whose it is."""

    provider: str
    source: HealthSource
    outcome: Outcome


class HealthUnavailable(StoreUnavailable):
    """The shared health state cannot be read or written just now."""


class HealthStore(Protocol):
    async def record(self, outcomes: Iterable[Observed]) -> None:
        """Add outcomes, each newest of its provider and source when added (in order)."""
        ...

    async def recent(self, providers: Iterable[str]) -> Recent:
        """Each provider's recent outcomes per source, newest first."""
        ...

    async def claim_round(self, seconds: float) -> bool:
        """True for the first caller in ``seconds``: that one probes now."""
        ...


def _fresh(outcomes: Iterable[Outcome], now: float) -> list[Outcome]:
    return [outcome for outcome in outcomes if outcome.at > now - OUTCOMES_WINDOW]


class MemoryHealthStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: dict[tuple[str, HealthSource], deque[Outcome]] = {}
        self._round_until = 0.0

    async def record(self, outcomes: Iterable[Observed]) -> None:
        with self._lock:
            for provider, source, outcome in outcomes:
                self._outcomes.setdefault((provider, source), deque(maxlen=OUTCOMES_KEPT)).appendleft(outcome)

    async def recent(self, providers: Iterable[str]) -> Recent:
        now = time.time()
        with self._lock:
            return {provider: {source: _fresh(self._outcomes.get((provider, source), ()), now)
                               for source in HEALTH_SOURCES} for provider in providers}

    async def claim_round(self, seconds: float) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._round_until:
                return False
            self._round_until = now + seconds
            return True


@asynccontextmanager
async def _reaching_redis() -> AsyncIterator[None]:
    with reaching_redis(HealthUnavailable, "the health store's Redis"):
        yield


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
        async with _reaching_redis(), self._client.pipeline(transaction=True) as pipe:
            for key, added in lists.items():
                pipe.lpush(key, *added)
                pipe.ltrim(key, 0, OUTCOMES_KEPT - 1)
                pipe.expire(key, int(OUTCOMES_WINDOW))
            await pipe.execute()

    async def recent(self, providers: Iterable[str]) -> Recent:
        pairs = [(provider, source) for provider in providers for source in HEALTH_SOURCES]
        if not pairs:
            return {}
        async with _reaching_redis(), self._client.pipeline(transaction=False) as pipe:
            for provider, source in pairs:
                pipe.lrange(self._topology.health_key(provider, source), 0, OUTCOMES_KEPT - 1)
            lists = await pipe.execute()
        now = time.time()
        recent: Recent = {}
        for (provider, source), raw in zip(pairs, lists, strict=True):
            recent.setdefault(provider, {})[source] = _fresh((Outcome.model_validate_json(item) for item in raw), now)
        return recent

    async def claim_round(self, seconds: float) -> bool:
        async with _reaching_redis():
            return bool(await self._client.set(self._topology.probe_round_key, "1", nx=True,
                                               px=max(1, int(seconds * 1000))))


@asynccontextmanager
async def open_redis_health_store(url: str, topology: Topology) -> AsyncIterator[RedisHealthStore]:
    """A store on a client of its own, for a caller on another event loop
    (the prober's): short timeouts, so a stalled Redis fails a round fast."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        yield RedisHealthStore(client, topology)
    finally:
        await client.aclose()
