"""Rate limit buckets in Redis, shared by every ingress process: one Lua
script checks and fills every bucket of a request, on Redis's clock.

When Redis cannot be reached the limiter falls back to its in-process
limiter (each process then enforces every limit on its own), logs that once,
and probes Redis in the background until it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence

import redis.asyncio as redis

from ingress.limiter import NEVER, WINDOW, BucketState, Decision, Limit
from ingress.limiter.memory import MemoryLimiter
from scheduler.outages import reaching_redis
from schema.errors import StoreUnavailable

log = logging.getLogger(__name__)


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
