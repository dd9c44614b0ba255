"""Where a job starts (``ingress.placement``), on the in-memory pool
statistics and breaker store: candidates are walked in order, a refusing
pool or an open circuit passes the job on, the shortest ``retry-after``
answers when all refuse, and the process's copy of the circuits is read
again only when it is old, forgotten, or a refusal depends on it."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from decimal import Decimal

import pytest
import redis.asyncio as redis

from ingress.placement import READ_TIMEOUT, CircuitWatch, place
from scheduler.admission import NoWorkers, PoolWatch, QueueFull
from scheduler.pool_stats import WorkerBeat
from scheduler.pool_stats.memory import MemoryPoolStats
from scheduler.queues.memory import MemoryJobQueue
from scheduler.topology import Topology
from schema.errors import CircuitOpen, UpstreamError
from schema.jobs import Job, Price, Route
from schema.settings import Settings
from workers.breaker_store.memory import MemoryBreakerStore
from workers.breaker_store.redis import RedisBreakerStore
from workers.breakers import Breakers

RESET_TIMEOUT = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def job(*providers: str) -> Job:
    return Job(account_id=1, key_id=1, model="m",
               routes=[Route(provider=name, upstream_model="m") for name in providers],
               payload={"messages": []}, deadline=time.time() + 60, price=Price(input_per_mtok=Decimal(1)))


def beat(provider: str, *, concurrency: int = 1, in_flight: int = 0, expires_in: float = 3.0) -> WorkerBeat:
    return WorkerBeat(worker=f"{provider}-w", provider=provider, concurrency=concurrency, in_flight=in_flight,
                      completed=0, service_rate=0.0, service_time=None, expires_at=time.time() + expires_in)


@pytest.fixture
def stats() -> MemoryPoolStats:
    return MemoryPoolStats()


@pytest.fixture
def jobs() -> MemoryJobQueue:
    return MemoryJobQueue()


@pytest.fixture
def pools(jobs: MemoryJobQueue, stats: MemoryPoolStats) -> PoolWatch:
    """Jobs take 1 s on a pool that has finished none; a pool unseen for 0.1 s is gone."""
    return PoolWatch(jobs, stats, Settings(default_service_time=1.0, pool_gone_after=0.1), max_age=0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breakers(clock: Clock) -> Breakers:
    return Breakers(MemoryBreakerStore(), failures=1, reset_timeout=RESET_TIMEOUT, clock=clock)


async def trip(breakers: Breakers, provider: str) -> None:
    """One 5xx on the provider's model ``m`` opens that model's circuit."""
    with pytest.raises(UpstreamError):
        async with breakers.guard(provider, "m"):
            raise UpstreamError(f"provider {provider!r} answered 500", status=502)


async def saturate(jobs: MemoryJobQueue, stats: MemoryPoolStats, provider: str, waiting: int) -> None:
    """A pool of one, busy, with ``waiting`` standard jobs queued: ``waiting + 1`` seconds for the next."""
    await stats.beat(beat(provider, in_flight=1))
    for _ in range(waiting):
        await jobs.enqueue(job(provider))
    await stats.count({(provider, 2): waiting})


async def test_the_first_candidate_that_admits_the_job_gets_it(
        jobs: MemoryJobQueue, stats: MemoryPoolStats, pools: PoolWatch, breakers: Breakers) -> None:
    circuits = CircuitWatch(breakers)
    assert await place(job("first", "second"), circuits, pools, 2.0) == 0
    await saturate(jobs, stats, "first", 3)  # 4 s > 2 s
    assert await place(job("first", "second"), circuits, pools, 2.0) == 1
    assert await place(job("first", "second"), circuits, pools, 5.0) == 0, "a longer queue deadline fits"


async def test_a_candidate_whose_workers_are_gone_passes_the_job_on(stats: MemoryPoolStats, pools: PoolWatch,
                                                                     breakers: Breakers) -> None:
    await stats.beat(beat("first", expires_in=0.01))
    await asyncio.sleep(0.2)  # gone for longer than pool_gone_after
    with pytest.raises(NoWorkers):
        await place(job("first"), CircuitWatch(breakers), pools, 2.0)
    assert await place(job("first", "second"), CircuitWatch(breakers), pools, 2.0) == 1


async def test_every_candidate_refused_gives_the_shortest_retry_after(
        jobs: MemoryJobQueue, stats: MemoryPoolStats, pools: PoolWatch, breakers: Breakers, clock: Clock) -> None:
    await saturate(jobs, stats, "slow", 5)  # 6 s: retry after 4 s
    await saturate(jobs, stats, "slower", 7)  # 8 s: retry after 6 s
    await trip(breakers, "tripped")  # closes again in 30 s
    circuits = CircuitWatch(breakers)
    with pytest.raises(QueueFull) as refused:
        await place(job("tripped", "slower", "slow"), circuits, pools, 2.0)
    assert refused.value.retry_after == 4 and "'slow'" in refused.value.message
    clock.now += RESET_TIMEOUT - 1.5
    with pytest.raises(CircuitOpen) as refused:
        await place(job("slower", "tripped", "slow"), circuits, pools, 2.0)
    assert refused.value.retry_after == 1.5 and "'tripped'" in refused.value.message
    clock.now += 1.5
    assert await place(job("slower", "tripped", "slow"), circuits, pools, 2.0) == 1, "its probe may go"


async def test_the_circuits_are_read_again_when_old_forgotten_or_refusing(breakers: Breakers) -> None:
    pools = PoolWatch(MemoryJobQueue(), MemoryPoolStats(), Settings())
    circuits = CircuitWatch(breakers, max_age=60)
    await trip(breakers, "first")
    assert await place(job("first", "second"), circuits, pools, 2.0) == 1
    await breakers.reset("first")  # as another ingress's operator would
    assert await place(job("first", "second"), circuits, pools, 2.0) == 1, "the copy is kept for its max age"
    circuits.forget_provider("first")
    assert await place(job("first", "second"), circuits, pools, 2.0) == 0

    await trip(breakers, "first")
    assert await place(job("first", "second"), circuits, pools, 2.0) == 0, "the copy says closed"
    circuits.forget(job("first").routes)  # a job of theirs failed
    assert await place(job("first", "second"), circuits, pools, 2.0) == 1

    await breakers.reset("first")
    await asyncio.sleep(0.1)  # a copy older than a refusal may rest on
    # Every candidate refused on the copy: read again before refusing, and found closed.
    assert await place(job("first"), circuits, pools, 2.0) == 0


async def test_unreadable_circuits_count_as_closed(pools: PoolWatch, caplog: pytest.LogCaptureFixture) -> None:
    """A Redis that takes connections and never answers: a read gives up
    after ``READ_TIMEOUT``, and the next requests do not try again at once."""
    connections: list[socket.socket] = []
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        threading.Thread(target=lambda: connections.extend(iter(lambda: silent.accept()[0], None)),
                         daemon=True).start()
        client = redis.Redis.from_url(f"redis://127.0.0.1:{silent.getsockname()[1]}")
        try:
            circuits = CircuitWatch(Breakers(RedisBreakerStore(client, Topology("gztest"))))
            with caplog.at_level(logging.WARNING, logger="ingress.placement"):
                assert [await place(job("first", "second"), circuits, pools, 2.0) for _ in range(3)] == [0, 0, 0]
            assert len(connections) == 1, "one read tried, then none while the copy counts as closed"
        finally:
            await client.aclose()
            for connection in connections:
                connection.close()
    assert [record.message for record in caplog.records if "circuits" in record.message] == [
        f"circuits unreadable (no answer within {READ_TIMEOUT:g}s): every candidate counts as closed"]
