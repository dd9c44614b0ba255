"""Builds the transports and the database for this process from its
settings, and runs the background roles (worker pools, billing).

Embedded or distributed is decided here and nowhere else: everything above
``Runtime`` is the same code in both modes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.balances import Balances
from billing.balances.memory import MemoryBalances
from billing.balances.redis import RedisBalances
from billing.consumer import SettlementConsumer
from billing.coupons import CouponBook
from billing.dead_letters import DeadLetterReader
from billing.journal import HoldJournal, JournaledBalances
from billing.ledger import Ledger
from billing.snapshots import LedgerSnapshots
from ingress.limiter import Limiter
from ingress.limiter.memory import MemoryLimiter
from ingress.limiter.redis import RedisLimiter
from ingress.placement import CircuitWatch
from ingress.ratelimit import RateLimits
from scheduler.admission import PoolWatch
from scheduler.catalog import Catalog
from scheduler.pool_stats import PoolStatsStore
from scheduler.pool_stats.memory import MemoryPoolStats
from scheduler.pool_stats.redis import RedisPoolStats
from scheduler.queues import DeadLetters, JobQueue, UsageQueue, rabbitmq
from scheduler.queues.memory import MemoryJobQueue, MemoryUsageQueue
from scheduler.result_bus import ResultBus
from scheduler.result_bus.memory import MemoryResultBus
from scheduler.result_bus.redis import RedisResultBus
from scheduler.topology import Topology
from scheduler.watched_queue import WatchedJobQueue
from schema.catalog import GatewayConfig
from schema.database import create_engine, migrate
from schema.settings import Settings
from workers.adapters import build_adapter
from workers.breaker_store import BreakerStore
from workers.breaker_store.memory import MemoryBreakerStore
from workers.breaker_store.redis import RedisBreakerStore
from workers.breakers import Breakers
from workers.cancels import CancelWatch
from workers.health import HealthLog
from workers.health_store import HealthStore
from workers.health_store.memory import MemoryHealthStore
from workers.health_store.redis import RedisHealthStore, open_redis_health_store
from workers.pool import ProviderPool
from workers.prober import Prober, prober_broker, run_prober
from workers.resilience import RetryPolicy

log = logging.getLogger(__name__)

EMBEDDED_CONCURRENCY = 64


@dataclass
class Runtime:
    settings: Settings
    catalog: Catalog
    engine: AsyncEngine
    ledger: Ledger
    balances: Balances  # what holds are taken against: the ledger's balances, mirrored
    coupons: CouponBook
    jobs: JobQueue
    results: ResultBus
    usage: UsageQueue
    rate_limits: RateLimits
    breakers: Breakers
    health: HealthLog
    pools: PoolWatch
    circuits: CircuitWatch  # this process's copy of the shared circuits, for choosing where jobs start
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    cancels: CancelWatch | None = None  # one subscription to cancellations for all this process's pools
    dead_letters: DeadLetters | None = None  # none on RabbitMQ without Redis: the job marks are out of sight

    def start_pool(self, provider: str, concurrency: int) -> ProviderPool:
        spec = self.catalog.provider(provider)
        if self.cancels is None:
            self.cancels = CancelWatch(self.results)
            self._spawn(self.cancels.run(), "cancellations")
        pool = ProviderPool(
            spec,
            build_adapter(spec, self.settings),
            jobs=self.jobs,
            results=self.results,
            usage=self.usage,
            concurrency=concurrency,
            drain_timeout=self.settings.drain_timeout,
            breakers=self.breakers,
            retries=RetryPolicy.from_settings(self.settings),
            health=self.health,
            cancels=self.cancels,
        )
        self._spawn(pool.run(), f"pool {provider}")
        return pool

    def start_billing(self) -> None:
        self._spawn(SettlementConsumer(self.ledger, self.balances, self.usage).run(), "billing")
        if self.dead_letters is None:
            log.warning("dead letters are not read: this billing process has no GATEWAYZ_REDIS_URL (job marks)")
            return
        reader = DeadLetterReader(self.results, self.usage)
        self._spawn(self.dead_letters.serve(reader.read), "dead letters")

    def start_prober(self) -> None:
        """The active prober (``workers.prober``), if an interval is set;
        one per process (dramatiq's AsyncIO loop is process-wide)."""
        if not self.settings.probe_interval:
            return
        topology = Topology(self.settings.namespace)
        url, store = self.settings.redis_url, self.health.store
        opener = (lambda: open_redis_health_store(url, topology)) if url else (lambda: contextlib.nullcontext(store))
        prober = Prober(tuple(self.catalog.providers.values()), self.settings, opener)
        self._spawn(run_prober(prober, prober_broker(self.settings), topology.prober_queue), "prober")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(_report_exit)
        self.tasks.append(task)


def _report_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped", task.get_name(), exc_info=task.exception())


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    config: GatewayConfig,
    *,
    subscribe: bool = True,
    apply_migrations: bool = False,
) -> AsyncIterator[Runtime]:
    """Open every resource this process needs; close them all on exit.

    ``subscribe`` opens the shared result subscription (ingress only).
    """
    async with AsyncExitStack() as stack:
        topology = Topology(settings.namespace)
        engine = create_engine(settings)
        stack.push_async_callback(engine.dispose)
        if apply_migrations or settings.embedded_database:
            await migrate(engine)

        jobs: JobQueue
        usage: UsageQueue
        dead_letters: DeadLetters | None = None
        if settings.broker_url:
            connection = await rabbitmq.connect(settings.broker_url)
            stack.push_async_callback(connection.close)
            jobs = rabbitmq.RabbitJobQueue(connection, topology, persistent=settings.persistent_jobs)
            usage = rabbitmq.RabbitUsageQueue(connection, topology)
            # Read only where the workers' job marks can be seen: without them
            # an answered job would look unrun and be settled at zero.
            dead_letters = rabbitmq.RabbitDeadLetters(connection, topology) if settings.redis_url else None
        else:
            memory_jobs = MemoryJobQueue()
            jobs, usage, dead_letters = memory_jobs, MemoryUsageQueue(), memory_jobs.dead_letters

        results: ResultBus
        circuits: BreakerStore = MemoryBreakerStore()
        health: HealthStore = MemoryHealthStore()
        pool_stats: PoolStatsStore = MemoryPoolStats()
        if settings.redis_url:
            # Blocking pool: a burst waits for a connection instead of failing.
            # One immediate retry replaces a pooled connection Redis closed on restart.
            pool = redis.BlockingConnectionPool.from_url(settings.redis_url, max_connections=256, timeout=10,
                                                         retry=Retry(NoBackoff(), 1))
            client = redis.Redis(connection_pool=pool)
            stack.push_async_callback(client.aclose)
            bus = RedisResultBus(client, topology)
            circuits = RedisBreakerStore(client, topology)  # every worker and ingress sees the same circuits
            health = RedisHealthStore(client, topology)
            # The same pools, on a client of their own: admission and the
            # workers' beats must not queue behind the main pool in an outage.
            stats_client = _quick_redis(settings.redis_url, max_connections=32)
            stack.push_async_callback(stats_client.aclose)
            pool_stats = RedisPoolStats(stats_client, topology)
            if subscribe:
                await bus.start()
                stack.push_async_callback(bus.close)
            results = bus
        else:
            results = MemoryResultBus()

        limiter = _limiter(settings, topology)
        stack.push_async_callback(limiter.aclose)
        rate_limits = RateLimits(config.plans, config.rate_limits, limiter)
        breakers = Breakers(circuits, failures=settings.breaker_failures, reset_timeout=settings.breaker_reset_timeout)

        # Every enqueue and every job taken keeps the pool statistics admission reads.
        watched = WatchedJobQueue(jobs, pool_stats)
        stack.push_async_callback(watched.flush)  # the last counts, before the store closes
        jobs = watched
        snapshots = LedgerSnapshots(engine)
        mirror: Balances = MemoryBalances(snapshots)
        if settings.redis_url:
            mirror = RedisBalances(client, snapshots, settings.namespace)  # shared by every ingress and billing
        ledger = Ledger(engine, follow=mirror.apply)
        balances = mirror
        journal: HoldJournal | None = None
        if settings.redis_url:
            # Holds go into the ledger too, in the background: a Redis that loses them loses no hold.
            journal = HoldJournal(ledger)
            balances = JournaledBalances(mirror, journal, ledger)
        stack.push_async_callback(balances.aclose)
        runtime = Runtime(settings, Catalog(config), engine, ledger, balances, CouponBook(ledger), jobs, results, usage,
                          rate_limits, breakers, HealthLog(health), PoolWatch(jobs, pool_stats, settings),
                          CircuitWatch(breakers), dead_letters=dead_letters)
        if journal is not None:
            runtime._spawn(journal.run(), "hold journal")
        try:
            yield runtime
        finally:
            await _stop(runtime.tasks)


def _limiter(settings: Settings, topology: Topology) -> Limiter:
    url = settings.rate_limit_redis_url or settings.redis_url
    if url is None:
        return MemoryLimiter()
    # A Redis that stalls must send admission to the per-process fallback
    # quickly, not hold requests.
    return RedisLimiter(_quick_redis(url, max_connections=64), topology.rate_limit_prefix)


def _quick_redis(url: str, *, max_connections: int) -> redis.Redis:
    """A client with its own small pool and short timeouts, for advice that
    must not hold a request or a job when Redis stalls (rate limits, pool
    statistics). One immediate retry replaces a pooled connection Redis
    closed on restart."""
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=2, socket_timeout=1,
                                                 socket_connect_timeout=1, retry=Retry(NoBackoff(), 1))
    return redis.Redis.from_pool(pool)  # which it closes with itself


async def _stop(tasks: Iterable[asyncio.Task[None]]) -> None:
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def embedded_roles(runtime: Runtime, *, concurrency: int = EMBEDDED_CONCURRENCY) -> None:
    """``gatewayz serve``: every provider's pool (``concurrency`` jobs at
    once each) and billing in this process."""
    for name in runtime.catalog.providers:
        runtime.start_pool(name, concurrency)
    runtime.start_billing()
    runtime.start_prober()
