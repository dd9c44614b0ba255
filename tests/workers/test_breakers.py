"""Circuit breakers on both stores (in memory, and the real Redis shared by
several ``Breakers`` as by several worker processes): they open after
consecutive failures, refuse while open, let exactly one probe through when
half-open, and count failures from many workers without losing any."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from scheduler.result_bus.redis import RedisResultBus
from scheduler.topology import Topology
from schema.errors import CircuitOpen, GatewayTimeout, ProviderUnavailable, RateLimited, UpstreamError
from schema.jobs import JobMark
from tests.support.processes import free_port
from tests.support.services import REDIS_URL, redis_namespace, require_services
from workers.breaker_store import BreakerStore
from workers.breaker_store.memory import MemoryBreakerStore
from workers.breaker_store.redis import RedisBreakerStore
from workers.breakers import Breakers


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[BreakerStore]:
    if request.param == "memory":
        yield MemoryBreakerStore()
        return
    async with redis_namespace() as (client, topology):
        yield RedisBreakerStore(client, topology)


async def attempt(breakers: Breakers, error: BaseException | None = None, *, model: str = "small",
                  hold: asyncio.Event | None = None) -> str:
    """One guarded attempt: "ran" (raising ``error`` if given) or "refused"."""
    try:
        async with breakers.guard("acme", model):
            if hold is not None:
                await hold.wait()
            if error is not None:
                raise error
    except CircuitOpen:
        return "refused"
    except BaseException as raised:
        if error is None or not isinstance(raised, type(error)):
            raise
    return "ran"


def failure() -> UpstreamError:
    return UpstreamError("provider 'acme' answered 500: boom", status=502)


async def test_opens_after_consecutive_failures_then_one_probe_closes_it(store: BreakerStore) -> None:
    clock = Clock()
    breakers = Breakers(store, failures=3, reset_timeout=10, clock=clock)
    assert [await attempt(breakers, failure()) for _ in range(3)] == ["ran"] * 3
    assert await attempt(breakers) == "refused", "open: nothing is called"
    assert await attempt(breakers, model="other") == "ran", "a 500 is one model's failure, not the provider's"

    (health,) = await breakers.health(["acme"])
    view = health.models["small"]
    assert (health.status, view.state, view.failures, view.recent_failures) == ("degraded", "open", 3, 3)
    assert view.last_error == "provider 'acme' answered 500: boom" and view.retry_at == clock.now + 10

    clock.now += 10
    hold = asyncio.Event()
    probe = asyncio.create_task(attempt(breakers, hold=hold))
    await asyncio.sleep(0.05)
    assert await attempt(breakers) == "refused", "half-open: only the probe goes through"
    hold.set()
    assert await probe == "ran"
    (health,) = await breakers.health(["acme"])
    assert (health.status, health.models["small"].state) == ("ok", "closed")
    assert [await attempt(breakers) for _ in range(3)] == ["ran"] * 3


async def test_a_failed_probe_opens_it_again(store: BreakerStore) -> None:
    clock = Clock()
    breakers = Breakers(store, failures=1, reset_timeout=10, clock=clock)
    await attempt(breakers, failure())
    clock.now += 10
    assert await attempt(breakers, failure()) == "ran"
    assert await attempt(breakers) == "refused"
    (health,) = await breakers.health(["acme"])
    assert health.models["small"].opened_at == clock.now


async def test_a_probe_whose_worker_vanished_is_given_up_after_the_reset_timeout(store: BreakerStore) -> None:
    clock = Clock()
    breakers = Breakers(store, failures=1, reset_timeout=10, clock=clock)
    await attempt(breakers, failure())
    clock.now += 10
    vanished = asyncio.create_task(attempt(breakers, hold=asyncio.Event()))
    await asyncio.sleep(0.05)
    vanished.cancel()  # a cancelled attempt says nothing about the provider: the probe stays claimed
    assert await attempt(breakers) == "refused"
    clock.now += 10
    assert await attempt(breakers) == "ran"


async def test_unreachable_is_the_providers_failure(store: BreakerStore) -> None:
    breakers = Breakers(store, failures=2, reset_timeout=10, clock=Clock())
    for model in ("small", "large"):
        await attempt(breakers, ProviderUnavailable("provider 'acme' is unreachable: ConnectError"), model=model)
    assert await attempt(breakers, model="third") == "refused", "every model of the provider"
    (health,) = await breakers.health(["acme"])
    assert (health.status, health.circuit.state) == ("down", "open")


@pytest.mark.parametrize("error", [RateLimited("slow down", retry_after=7),
                                   UpstreamError("bad request", status=400)])
async def test_rate_limits_and_the_clients_errors_do_not_count(store: BreakerStore, error: Exception) -> None:
    breakers = Breakers(store, failures=1, reset_timeout=10, clock=Clock())
    assert [await attempt(breakers, error) for _ in range(3)] == ["ran"] * 3


async def test_a_success_resets_the_consecutive_count(store: BreakerStore) -> None:
    breakers = Breakers(store, failures=2, reset_timeout=10, clock=Clock())
    for outcome in (failure(), None, failure(), None, GatewayTimeout("late")):
        assert await attempt(breakers, outcome) == "ran"
    (health,) = await breakers.health(["acme"])
    assert (health.models["small"].failures, health.models["small"].recent_failures) == (1, 3)


async def test_workers_sharing_a_store_lose_no_failure(store: BreakerStore) -> None:
    """Many workers failing at once (here: three ``Breakers``, as three
    processes would have) are all counted, through compare-and-set."""
    clock = Clock()
    workers = [Breakers(store, failures=1000, reset_timeout=10, clock=clock) for _ in range(3)]
    await asyncio.gather(*(attempt(workers[n % 3], failure()) for n in range(30)))
    (health,) = await workers[0].health(["acme"])
    assert health.models["small"].failures == 30


async def test_an_operator_reset_closes_every_circuit_of_the_provider(store: BreakerStore) -> None:
    breakers = Breakers(store, failures=1, reset_timeout=10, clock=Clock())
    await attempt(breakers, failure())
    await attempt(breakers, ProviderUnavailable("unreachable"), model="large")
    await breakers.reset("acme")
    (health,) = await breakers.health(["acme"])
    assert health.status == "ok" and all(view.state == "closed" for view in health.models.values())
    assert await attempt(breakers) == "ran"


async def test_marks_of_a_later_attempt_are_never_overwritten() -> None:
    require_services()
    client = redis.Redis.from_url(REDIS_URL)
    bus = RedisResultBus(client, Topology(f"gztest{uuid.uuid4().hex[:10]}"))
    try:
        assert await bus.mark("j", JobMark(state="handed_off", attempt=1), 60) is None
        before = await bus.mark("j", JobMark(state="started", attempt=0), 60)
        assert before == JobMark(state="handed_off", attempt=1)
        assert await bus.mark("j", JobMark(state="started", attempt=1), 60) == before, "still there"
        assert await bus.mark("j", JobMark(state="done", attempt=1), 60) == JobMark(state="started", attempt=1)
    finally:
        await client.delete(f"{bus._topology.namespace}:jobstate:j")
        await client.aclose()


async def test_an_unreachable_store_lets_attempts_through_unguarded() -> None:
    client = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    breakers = Breakers(RedisBreakerStore(client, Topology("gztest-nowhere")), failures=1, reset_timeout=10)
    try:
        assert [await attempt(breakers, failure()) for _ in range(3)] == ["ran"] * 3
        assert await attempt(breakers) == "ran"
    finally:
        await client.aclose()
