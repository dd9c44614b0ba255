"""The rate limiter: leaky buckets checked and filled all at once, in Redis
(one Lua script, shared by every ingress process) or in this process.

Each limit is a bucket of ``capacity`` units (requests or tokens) that
drains continuously at ``capacity`` per minute. A request adds its cost to
every bucket that applies to it only if it fits in all of them; otherwise it
adds nothing, and is told how long until it would fit. This is GCRA (the
leaky bucket as a meter) rather than a window: one level and one timestamp
per bucket whatever the traffic, no double burst at a window's edge, an
exact ``retry-after``, and capacity that comes back continuously, as
OpenAI's limits do. A full minute's capacity may be used in one burst.

The Redis limiter runs the script on Redis's clock, so ingress processes
need not agree on the time. When Redis cannot be reached it falls back to
its in-process limiter (each process then enforces every limit on its own),
logs that once, and probes Redis in the background until it answers again.
The two implementations compute with the same formulas in the same order,
so, given the same clock, they give the same answers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as redis

from scheduler.outages import reaching_redis
from schema.errors import StoreUnavailable

log = logging.getLogger(__name__)

WINDOW = 60.0  # seconds: limits are per minute
EPSILON = 1e-9  # levels are sums of whole costs less drained fractions
NEVER = -1  # the script's retry-after for a cost larger than a bucket


@dataclass(frozen=True, slots=True)
class Limit:
    bucket: str  # the counter's name, unique per scope and unit: "key:12:tokens"
    capacity: int  # units per minute
    cost: int  # units this request takes


@dataclass(frozen=True, slots=True)
class BucketState:
    """A bucket after the decision."""

    capacity: int
    remaining: int
    reset: float  # seconds until it is empty again (all capacity back)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    # Seconds until the request would fit, had nothing else taken capacity
    # (0 when allowed; infinite when its cost exceeds a bucket's capacity).
    retry_after: float
    refused_by: int | None  # the index of the limit that refused it (the longest wait)
    states: tuple[BucketState, ...]  # one per limit, in order


class Limiter(Protocol):
    @property
    def mode(self) -> str:
        """Where limits are counted, as ``GET /health`` shows it."""
        ...

    async def consume(self, limits: Sequence[Limit], *, now: float | None = None) -> Decision:
        """Check every limit and, only if all allow, take the cost from each.
        ``now`` (unix seconds) replaces the limiter's clock, for tests."""
        ...

    async def aclose(self) -> None: ...


def _ms(seconds: float) -> int:
    return math.ceil(seconds * 1000)


def decide(limits: Sequence[Limit], stored: Sequence[tuple[float, float] | None], now: float,
           window: float = WINDOW) -> tuple[Decision, list[float]]:
    """The algorithm, as the Lua script runs it: ``stored`` is each bucket's
    (level, time of that level); returns the decision and the new levels."""
    levels: list[float] = []
    allowed, wait, refused_by = True, 0.0, None
    for index, (limit, state) in enumerate(zip(limits, stored, strict=True)):
        level, at = state if state is not None else (0.0, now)
        if now > at:
            level = max(0.0, level - (now - at) * limit.capacity / window)
        levels.append(level)
        if limit.cost > limit.capacity:
            if wait >= 0:
                refused_by = index
            allowed, wait = False, float(NEVER)
        elif level + limit.cost > limit.capacity + EPSILON:
            needed = (level + limit.cost - limit.capacity) * window / limit.capacity
            allowed = False
            if wait >= 0 and needed > wait:
                wait, refused_by = needed, index
    if allowed:
        levels = [level + limit.cost for level, limit in zip(levels, limits, strict=True)]
    states = tuple(
        BucketState(limit.capacity, max(0, math.floor(limit.capacity - level + EPSILON)),
                    _ms(level * window / limit.capacity) / 1000)
        for level, limit in zip(levels, limits, strict=True)
    )
    retry_after = math.inf if wait < 0 else _ms(wait) / 1000
    return Decision(allowed, retry_after, refused_by, states), levels


class MemoryLimiter:
    """Buckets in this process: the embedded mode's limiter, and the Redis
    limiter's fallback. Atomic because it never awaits while deciding."""

    mode = "per-process"

    def __init__(self, *, window: float = WINDOW, size: int = 100_000) -> None:
        self._window = window
        self._size = size
        # bucket -> (level, time of that level, when it is empty again)
        self._buckets: dict[str, tuple[float, float, float]] = {}

    async def consume(self, limits: Sequence[Limit], *, now: float | None = None) -> Decision:
        return self.consume_now(limits, time.time() if now is None else now)

    def consume_now(self, limits: Sequence[Limit], now: float) -> Decision:
        stored = [self._buckets.get(limit.bucket) for limit in limits]
        decision, levels = decide(limits, [s[:2] if s else None for s in stored], now, self._window)
        if decision.allowed:
            if len(self._buckets) > self._size:
                self._buckets = {name: kept for name, kept in self._buckets.items() if kept[2] > now}
            for limit, level in zip(limits, levels, strict=True):
                self._buckets[limit.bucket] = (level, now, now + level * self._window / limit.capacity)
        return decision

    async def aclose(self) -> None:
        return None


# KEYS: one hash per bucket (level, at). ARGV: now in seconds ("" for Redis's
# clock), the window, then capacity and cost per bucket. Returns: allowed,
# retry-after in ms (-1: never), the refusing bucket (1-based, 0: none), then
# per bucket its remaining units and ms until it is empty. Mirrors decide().
SCRIPT = """
local now = tonumber(ARGV[1])
if not now then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
end
local window = tonumber(ARGV[2])
local epsilon = 1e-9
local capacities, costs, levels = {}, {}, {}
local allowed, wait, refused_by = 1, 0, 0
for i = 1, #KEYS do
  local capacity = tonumber(ARGV[2 * i + 1])
  local cost = tonumber(ARGV[2 * i + 2])
  local stored = redis.call('HMGET', KEYS[i], 'level', 'at')
  local level = tonumber(stored[1]) or 0
  local at = tonumber(stored[2]) or now
  if now > at then
    level = math.max(0, level - (now - at) * capacity / window)
  end
  capacities[i], costs[i], levels[i] = capacity, cost, level
  if cost > capacity then
    if wait >= 0 then refused_by = i end
    allowed, wait = 0, -1
  elseif level + cost > capacity + epsilon then
    local needed = (level + cost - capacity) * window / capacity
    allowed = 0
    if wait >= 0 and needed > wait then wait, refused_by = needed, i end
  end
end
local result = {allowed, -1, refused_by}
if wait >= 0 then result[2] = math.ceil(wait * 1000) end
for i = 1, #KEYS do
  local level = levels[i]
  if allowed == 1 then
    level = level + costs[i]
    redis.call('HSET', KEYS[i], 'level', string.format('%.17g', level), 'at', string.format('%.17g', now))
    redis.call('PEXPIRE', KEYS[i], math.ceil(level * window / capacities[i] * 1000) + 1000)
  end
  result[2 * i + 2] = math.max(0, math.floor(capacities[i] - level + epsilon))
  result[2 * i + 3] = math.ceil(level * window / capacities[i] * 1000)
end
return result
"""


class RedisLimiter:
    """Buckets in Redis, shared by every ingress process; falls back to
    ``fallback`` while Redis cannot be reached. Owns ``client`` (closes it)."""

    def __init__(self, client: redis.Redis, prefix: str, *, fallback: MemoryLimiter | None = None,
                 retry_interval: float = 2.0, window: float = WINDOW) -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(SCRIPT)
        self._fallback = fallback or MemoryLimiter(window=window)
        self._retry_interval = retry_interval
        self._window = window
        self._probe: asyncio.Task[None] | None = None

    @property
    def degraded(self) -> bool:
        return self._probe is not None

    @property
    def mode(self) -> str:
        return "degraded: per-process" if self.degraded else "shared: redis"

    async def consume(self, limits: Sequence[Limit], *, now: float | None = None) -> Decision:
        if not self.degraded:
            try:
                return await self._run(limits, now)
            except StoreUnavailable as error:
                self._degrade(error)
        return self._fallback.consume_now(limits, time.time() if now is None else now)

    async def _run(self, limits: Sequence[Limit], now: float | None) -> Decision:
        args: list[str | int | float] = ["" if now is None else repr(now), repr(self._window)]
        for limit in limits:
            args += [limit.capacity, limit.cost]
        with reaching_redis(StoreUnavailable, "the rate limits' Redis"):
            reply = await self._script(keys=[f"{self._prefix}{limit.bucket}" for limit in limits], args=args)
        allowed, retry_ms, refused_by = (int(value) for value in reply[:3])
        states = tuple(
            BucketState(limit.capacity, int(reply[2 * index + 3]), int(reply[2 * index + 4]) / 1000)
            for index, limit in enumerate(limits)
        )
        return Decision(bool(allowed), math.inf if retry_ms == NEVER else retry_ms / 1000,
                        refused_by - 1 if refused_by else None, states)

    def _degrade(self, error: BaseException) -> None:
        if self._probe is not None:
            return  # logged once, when it became unreachable
        log.warning("Redis is unreachable for rate limits (%s): each ingress process now enforces every limit "
                    "on its own, until Redis answers again", str(error) or type(error).__name__)
        self._probe = asyncio.create_task(self._wait_for_redis(), name="rate limit redis probe")

    async def _wait_for_redis(self) -> None:
        while True:
            await asyncio.sleep(self._retry_interval)
            try:
                await self._run([], None)
            except StoreUnavailable:
                continue
            log.warning("Redis is reachable again: rate limits are shared by every ingress process again")
            self._probe = None
            return

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
            self._probe = None
        await self._client.aclose()
