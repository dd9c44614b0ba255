"""The rate limiter: leaky buckets checked and filled all at once, in Redis
(one Lua script, shared by every ingress process; ``ingress.limiter.redis``)
or in this process (``ingress.limiter.memory``).

Each limit is a bucket of ``capacity`` units (requests or tokens) that
drains continuously at ``capacity`` per minute. A request adds its cost to
every bucket that applies to it only if it fits in all of them; otherwise it
adds nothing, and is told how long until it would fit. This is GCRA (the
leaky bucket as a meter) rather than a window: one level and one timestamp
per bucket whatever the traffic, no double burst at a window's edge, an
exact ``retry-after``, and capacity that comes back continuously, as
OpenAI's limits do. A full minute's capacity may be used in one burst.

This module holds the interface and the algorithm (``decide``). The Redis
limiter runs the same formulas in the same order as a Lua script, on Redis's
clock, so ingress processes need not agree on the time, and the two
implementations, given the same clock, give the same answers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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
