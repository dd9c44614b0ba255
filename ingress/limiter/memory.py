"""Rate limit buckets in this process: the embedded mode's limiter, and the
Redis limiter's fallback while Redis cannot be reached."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ingress.limiter import WINDOW, Decision, Limit, decide


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
