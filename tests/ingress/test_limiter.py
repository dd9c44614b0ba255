"""The rate limiter's algorithm, the same cases against both implementations
(in this process, and the Lua script on the real Redis), on a clock the
test sets; their answers on one long random sequence are identical; and a
burst from many clients at once takes exactly the capacity."""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as redis

from ingress.limiter import BucketState, Decision, Limit, Limiter
from ingress.limiter.memory import MemoryLimiter
from ingress.limiter.redis import RedisLimiter
from ingress.ratelimit import duration
from tests.support.services import REDIS_URL, require_services

T0 = 1_700_000_000.0


async def _redis_limiter(prefix: str) -> RedisLimiter:
    require_services()
    return RedisLimiter(redis.Redis.from_url(REDIS_URL), prefix)


async def _forget(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    async with client:
        keys = [key async for key in client.scan_iter(f"{prefix}*")]
        if keys:
            await client.delete(*keys)


@pytest.fixture(params=["memory", "redis"])
async def make_limiter(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], object]]:
    """Builds limiters sharing one set of buckets (one process, or one Redis)."""
    prefix = f"gztest{uuid.uuid4().hex[:10]}:ratelimit:"
    made: list[Limiter] = []
    shared = MemoryLimiter()

    async def make() -> Limiter:
        limiter: Limiter = shared if request.param == "memory" else await _redis_limiter(prefix)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()
    if request.param == "redis":
        await _forget(prefix)


@pytest.fixture
async def limiter(make_limiter: Callable[[], object]) -> Limiter:
    return await make_limiter()  # type: ignore[misc]


def requests(capacity: int, name: str = "key:1:requests") -> Limit:
    return Limit(name, capacity, 1)


async def test_a_minute_of_capacity_in_one_burst_then_a_refusal(limiter: Limiter) -> None:
    decisions = [await limiter.consume([requests(5)], now=T0) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True] * 5
    assert [d.states[0].remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert decisions[-1].states[0] == BucketState(capacity=5, remaining=0, reset=60.0)
    refused = await limiter.consume([requests(5)], now=T0)
    # One request's worth comes back every 60 / 5 = 12 seconds.
    assert refused == Decision(False, 12.0, 0, (BucketState(5, 0, 60.0),))


async def test_capacity_comes_back_continuously(limiter: Limiter) -> None:
    for _ in range(5):
        await limiter.consume([requests(5)], now=T0)
    early = await limiter.consume([requests(5)], now=T0 + 6)
    assert (early.allowed, early.retry_after, early.states[0].remaining) == (False, 6.0, 0)
    on_time = await limiter.consume([requests(5)], now=T0 + 12)
    assert on_time.allowed and on_time.states[0] == BucketState(5, 0, 60.0)
    later = await limiter.consume([requests(5)], now=T0 + 12 + 30)
    assert later.allowed and later.states[0] == BucketState(5, 1, 42.0)  # 2.5 came back, 1 taken: 3.5 used
    idle = await limiter.consume([requests(5)], now=T0 + 1000)
    assert idle.states[0] == BucketState(5, 4, 12.0), "an idle bucket is full again, never more"


async def test_tokens_are_taken_by_cost(limiter: Limiter) -> None:
    tokens = Limit("key:1:tokens", 1000, 300)
    decisions = [await limiter.consume([tokens], now=T0) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.states[0].remaining for d in decisions] == [700, 400, 100, 100]
    # 900 used + 300 asked - 1000 = 200 tokens short, back in 200 * 60 / 1000 s.
    assert decisions[-1].retry_after == 12.0
    small = await limiter.consume([Limit("key:1:tokens", 1000, 100)], now=T0)
    assert small.allowed and small.states[0].remaining == 0


async def test_a_refused_request_takes_nothing_from_any_limit(limiter: Limiter) -> None:
    key, account = requests(10, "key:1:requests"), requests(2, "account:1:requests")
    first = [await limiter.consume([key, account], now=T0) for _ in range(2)]
    assert all(d.allowed for d in first)
    refused = await limiter.consume([key, account], now=T0)
    assert (refused.allowed, refused.refused_by, refused.retry_after) == (False, 1, 30.0)
    assert [s.remaining for s in refused.states] == [8, 0]
    # The key alone still has its 8: the refusal took none of them.
    assert (await limiter.consume([key], now=T0)).states[0].remaining == 7


async def test_the_longest_wait_is_the_refusal(limiter: Limiter) -> None:
    short, long = requests(60, "key:1:requests"), requests(2, "account:1:requests")
    for _ in range(2):
        await limiter.consume([long], now=T0)
    for _ in range(60):
        await limiter.consume([short], now=T0)
    refused = await limiter.consume([short, long], now=T0)
    assert (refused.refused_by, refused.retry_after) == (1, 30.0)


async def test_a_cost_above_capacity_can_never_fit(limiter: Limiter) -> None:
    too_big = Limit("key:1:tokens", 1000, 1001)
    refused = await limiter.consume([requests(10), too_big, requests(1, "account:1:requests")], now=T0)
    assert (refused.allowed, refused.refused_by) == (False, 1)
    assert math.isinf(refused.retry_after)
    assert (await limiter.consume([requests(10)], now=T0)).states[0].remaining == 9
    assert (await limiter.consume([requests(1, "account:1:requests")], now=T0)).allowed


async def test_a_lowered_capacity_applies_at_once(limiter: Limiter) -> None:
    for _ in range(8):
        await limiter.consume([requests(10)], now=T0)
    lowered = await limiter.consume([requests(4)], now=T0)
    assert (lowered.allowed, lowered.states[0].remaining) == (False, 0)
    assert lowered.retry_after == 75.0  # 8 used of 4, plus 1: 5 units at 15 s each


async def test_a_burst_from_many_clients_takes_exactly_the_capacity(make_limiter: Callable[[], object]) -> None:
    # Five limiters on one set of buckets stand for five ingress processes.
    limiters = [await make_limiter() for _ in range(5)]  # type: ignore[misc]
    limits = [requests(37), Limit("key:1:tokens", 10_000_000, 25)]
    decisions = await asyncio.gather(*(limiters[n % 5].consume(limits, now=T0) for n in range(200)))
    assert sum(d.allowed for d in decisions) == 37
    assert {d.refused_by for d in decisions if not d.allowed} == {0}


async def test_redis_buckets_expire_once_empty() -> None:
    prefix = f"gztest{uuid.uuid4().hex[:10]}:ratelimit:"
    limiter = await _redis_limiter(prefix)
    try:
        await limiter.consume([requests(6)])  # a sixth of a minute to drain
        client = redis.Redis.from_url(REDIS_URL)
        async with client:
            ttl = await client.pttl(f"{prefix}key:1:requests")
        assert 10_000 < ttl <= 11_000
    finally:
        await limiter.aclose()
        await _forget(prefix)


async def test_both_implementations_agree_on_a_long_random_sequence() -> None:
    prefix = f"gztest{uuid.uuid4().hex[:10]}:ratelimit:"
    memory, shared = MemoryLimiter(), await _redis_limiter(prefix)
    rng = random.Random(5)
    now = T0
    buckets = {"key:1:requests": 7, "key:1:tokens": 900, "account:1:requests": 11, "system:tokens": 2500}
    try:
        for _ in range(1000):
            now += rng.choice([0.0, 0.0, 0.001, 0.05, 0.37, 1.5, 4.0, 13.0])
            chosen = rng.sample(sorted(buckets), rng.randint(1, 4))
            limits = [Limit(name, buckets[name], 1 if name.endswith("requests") else rng.randint(1, 950))
                      for name in chosen]
            expected = await memory.consume(limits, now=now)
            assert await shared.consume(limits, now=now) == expected
    finally:
        await shared.aclose()
        await _forget(prefix)


@pytest.mark.parametrize(("seconds", "written"), [
    (0.0, "0ms"), (0.0004, "1ms"), (0.02, "20ms"), (0.999, "999ms"), (1.0, "1s"), (1.5, "1.5s"), (12.0, "12s"),
    (59.9991, "1m0s"), (60.0, "1m0s"), (61.25, "1m1.25s"), (360.0, "6m0s"),
])
def test_reset_times_are_written_like_openais(seconds: float, written: str) -> None:
    assert duration(seconds) == written
