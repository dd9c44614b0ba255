"""The queue-wait estimator, queue deadlines, the drift correction of
counted depth, and the pool statistics stores (in memory and on the real
Redis), with the watched queue that keeps them."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import orjson
import pytest

from scheduler.admission import (
    NoWorkers,
    PoolView,
    PoolWatch,
    QueueFull,
    corrected,
    estimated_wait,
    judge,
    queue_deadline,
)
from scheduler.pool_stats import PoolCounts, PoolStatsStore, WorkerBeat
from scheduler.pool_stats.memory import MemoryPoolStats
from scheduler.pool_stats.redis import RedisPoolStats
from scheduler.queues.memory import MemoryJobQueue
from scheduler.watched_queue import WatchedJobQueue
from schema.errors import InvalidRequest
from schema.jobs import Job, Price, Route
from schema.settings import Settings
from tests.support.services import redis_namespace


def worker(concurrency: int, in_flight: int = 0, rate: float = 0.0, service_time: float | None = None,
           name: str = "w1", expires_in: float = 3.0, waiting: int = 0) -> WorkerBeat:
    return WorkerBeat(worker=name, provider="acme", concurrency=concurrency, in_flight=in_flight, completed=0,
                      service_rate=rate, service_time=service_time, expires_at=time.time() + expires_in,
                      waiting=waiting)


def view(depth: dict[int, int], *workers: WorkerBeat, last_seen: float | None = None) -> PoolView:
    return PoolView("acme", depth, sum(depth.values()), list(workers), last_seen)


def test_an_idle_pool_with_free_slots_takes_a_job_at_once() -> None:
    assert estimated_wait(view({}, worker(4, in_flight=3)), 2, 10.0) == 0.0


def test_jobs_ahead_drain_at_the_pools_rate() -> None:
    busy = worker(2, in_flight=2, rate=0.5, service_time=4.0)  # capacity 2 / 4 s = 0.5 jobs/s
    # Five jobs at priority >= 2 ahead, none free: the job is the sixth to start.
    assert estimated_wait(view({4: 1, 2: 4, 1: 7}, busy), 2, 10.0) == pytest.approx(6 / 0.5)
    # Realtime is ahead of every standard and bulk job.
    assert estimated_wait(view({4: 1, 2: 4, 1: 7}, busy), 4, 10.0) == pytest.approx(2 / 0.5)
    # A measured rate higher than the capacity estimate wins.
    fast = worker(2, in_flight=2, rate=4.0, service_time=4.0)
    assert estimated_wait(view({2: 3}, fast), 2, 10.0) == pytest.approx(4 / 4.0)


def test_a_pool_with_no_history_is_assumed_to_take_the_default_service_time() -> None:
    assert estimated_wait(view({2: 5}, worker(4, in_flight=4)), 2, 2.0) == pytest.approx(6 / (4 / 2.0))


def test_waiting_jobs_mean_no_slot_is_free_whatever_a_late_beat_said() -> None:
    stale = worker(4, in_flight=0)  # its beat predates the jobs it took since
    assert estimated_wait(view({1: 2}, stale), 4, 1.0) == pytest.approx(1 / 4)


def test_the_workers_add_up() -> None:
    pool = view({2: 1}, worker(3, in_flight=1, rate=1.0, service_time=1.0, name="a"),
                worker(1, in_flight=1, rate=0.5, service_time=5.0, name="b"))
    assert (pool.consumers, pool.concurrency, pool.in_flight, pool.service_rate) == (2, 4, 2, 1.5)
    assert pool.service_time == pytest.approx((3 * 1.0 + 1 * 5.0) / 4)


def test_no_worker_is_no_estimate() -> None:
    assert estimated_wait(view({2: 3}), 2, 1.0) is None


def test_judge_refuses_with_the_time_the_queue_needs() -> None:
    pool = view({2: 9}, worker(1, in_flight=1, service_time=1.0))
    judge(pool, 2, 10.0, default_service_time=1.0, gone_after=30, now=time.time())  # exactly 10 s fits
    with pytest.raises(QueueFull) as refused:
        judge(pool, 2, 7.5, default_service_time=1.0, gone_after=30, now=time.time())
    assert refused.value.status == 503 and refused.value.headers() == {"retry-after": "3"}


def test_a_pool_gone_for_long_is_refused_and_one_never_seen_is_waited_for() -> None:
    now = time.time()
    judge(view({}), 2, 1.0, default_service_time=1.0, gone_after=30, now=now)  # never served: not started yet
    judge(view({}, last_seen=now - 10), 2, 1.0, default_service_time=1.0, gone_after=30, now=now)  # restarting
    with pytest.raises(NoWorkers):
        judge(view({}, last_seen=now - 31), 2, 600.0, default_service_time=1.0, gone_after=30, now=now)


def test_queue_deadlines_by_class_and_header() -> None:
    settings = Settings(queue_deadline_realtime=5, queue_deadline_standard=50, queue_deadline_bulk=500)
    assert [queue_deadline(settings, name, None) for name in ("realtime", "standard", "bulk")] == [5, 50, 500]
    assert queue_deadline(settings, "bulk", "1500") == 1.5
    assert queue_deadline(settings, "realtime", " 0 ") == 0.0
    for bad in ("-1", "1.5", "soon", ""):
        with pytest.raises(InvalidRequest):
            queue_deadline(settings, "standard", bad)


def test_counted_depth_is_trimmed_to_the_queues_total_from_the_lowest_priority() -> None:
    counts = PoolCounts({4: 1, 2: 3, 1: 2, 0: -1})
    assert corrected(counts, 6) == {4: 1, 2: 3, 1: 2}
    assert corrected(counts, 4) == {4: 1, 2: 3}
    assert corrected(counts, 2) == {4: 1, 2: 1}
    assert corrected(counts, 0) == {}


def job(priority: int, provider: str = "acme") -> Job:
    return Job(account_id=1, key_id=1, model="m", routes=[Route(provider=provider, upstream_model="m")],
               payload={}, deadline=time.time() + 60, price=Price(input_per_mtok=Decimal(0)), priority=priority)


async def test_drift_left_by_jobs_that_never_reached_a_worker_is_forgotten() -> None:
    stats, jobs = MemoryPoolStats(), MemoryJobQueue()
    watch = PoolWatch(jobs, stats, Settings())
    # Two jobs counted as queued that the queue does not hold (expired in RabbitMQ, say).
    await stats.count({("acme", 2): 2})
    assert (await watch.view("acme", max_age=0)).depth == {}, "the view is trimmed at once"
    await asyncio.sleep(1.05)
    await watch.view("acme", max_age=0)  # seen twice, a second apart: taken away
    assert (await stats.read("acme")).depth == {2: 0}


async def test_the_watched_queue_counts_jobs_and_reports_its_pool() -> None:
    stats = MemoryPoolStats()
    queue = WatchedJobQueue(MemoryJobQueue(), stats)
    gate = asyncio.Event()
    taken: list[Job] = []

    async def handle(item: Job, redelivered: bool) -> None:
        taken.append(item)
        await gate.wait()

    for priority in (4, 2, 2, 1):
        await queue.enqueue(job(priority))
    await queue.flush()  # counted in the background
    assert (await stats.read("acme")).depth == {4: 1, 2: 2, 1: 1}
    serving = asyncio.create_task(queue.serve("acme", 2, handle))
    await asyncio.sleep(0.05)
    await queue.flush()
    counts = await stats.read("acme")
    assert counts.depth == {4: 0, 2: 1, 1: 1}, "the realtime job and one standard one were taken"
    (beat,) = counts.workers
    assert (beat.concurrency, beat.in_flight) == (2, 0), "the first beat precedes the first job"
    assert all(item.enqueued_at is not None and item.queue_wait(time.time()) < 1 for item in taken)
    gate.set()
    await asyncio.sleep(1.1)  # the next beat
    (beat,) = (await stats.read("acme")).workers
    assert (beat.in_flight, beat.completed) == (0, 4) and beat.service_rate > 0 and beat.service_time is not None
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    counts = await stats.read("acme")
    assert counts.workers == [] and counts.last_seen is not None, "a pool that stops leaves at once"


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[PoolStatsStore]:
    if request.param == "memory":
        yield MemoryPoolStats()
        return
    async with redis_namespace("test-pools-") as (client, topology):
        yield RedisPoolStats(client, topology)


async def test_stores_agree(store: PoolStatsStore) -> None:
    stats = store
    assert await stats.read("acme") == PoolCounts({}, [], None)
    await stats.count({("acme", 4): 1})
    await stats.count({("acme", 2): 3})
    await stats.count({("acme", 2): -1})
    live = worker(3, in_flight=2, rate=1.5, service_time=0.5, name="a", waiting=2)
    dying = worker(1, name="b", expires_in=0.2)
    await stats.beat(live)
    await stats.beat(dying)
    counts = await stats.read("acme")
    assert counts.depth == {4: 1, 2: 2} and counts.workers == [live, dying] and counts.last_seen is not None
    await asyncio.sleep(0.3)
    assert (await stats.read("acme")).workers == [live], "an expired beat is gone"
    await stats.correct("acme", {2: 2})
    await stats.leave("acme", "a")
    assert await stats.read("other") == PoolCounts({}, [], None)
    counts = await stats.read("acme")
    assert (counts.depth, counts.workers) == ({4: 1, 2: 0}, [])


async def test_a_beat_in_redis_reads_as_before_to_a_reader_without_waiting() -> None:
    async with redis_namespace("test-pools-") as (client, topology):
        stats = RedisPoolStats(client, topology)
        beat = worker(4, in_flight=4, name="a", waiting=3)
        await stats.beat(beat)
        raw = orjson.loads(await client.hget(topology.pool_workers("acme"), "a"))
        assert "waiting" not in raw, "an older reader builds WorkerBeat from these fields alone"
        assert WorkerBeat(**raw) == dataclasses.replace(beat, waiting=0)
        assert (await stats.read("acme")).workers == [beat]
        await stats.leave("acme", "a")
        assert await client.hgetall(topology.pool_waiting("acme")) == {}


async def test_jobs_a_worker_holds_for_a_slot_count_in_the_queues_total() -> None:
    stats, jobs = MemoryPoolStats(), MemoryJobQueue()
    await stats.count({("acme", 4): 1, ("acme", 2): 3})  # the realtime job waits in a worker, out of the queue
    await stats.beat(worker(1, in_flight=1, rate=1.0, waiting=1))
    for _ in range(3):
        await jobs.enqueue(job(2))
    view = await PoolWatch(jobs, stats, Settings()).view("acme")
    assert (view.depth, view.total_depth) == ({4: 1, 2: 3}, 4), "no count trimmed"


async def test_views_are_cached_for_their_max_age_and_a_refusal_reads_afresh() -> None:
    stats, jobs = MemoryPoolStats(), MemoryJobQueue()
    watch = PoolWatch(jobs, stats, Settings(default_service_time=1.0), max_age=60)
    await stats.beat(worker(1, in_flight=1))
    await jobs.enqueue(job(2))
    await stats.count({("acme", 2): 1})
    assert (await watch.view("acme")).depth == {2: 1}
    for _ in range(5):  # 5 more standard jobs wait: a 7 s estimate for a standard job
        await jobs.enqueue(job(2))
        await stats.count({("acme", 2): 1})
    assert (await watch.view("acme")).depth == {2: 1}, "within its max age, the view is not read again"
    await watch.admit("acme", 2, 3.0)  # the cached view says 2 s: admitted without a read
    with pytest.raises(QueueFull):
        # A view more than 50 ms old that would refuse is read again before refusing.
        watch._views["acme"] = PoolView("acme", {2: 9}, 9, [worker(1, in_flight=1)], read_at=time.monotonic() - 1)
        await watch.admit("acme", 2, 3.0)
    assert (await watch.view("acme")).depth == {2: 6}
