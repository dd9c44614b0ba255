"""Which implementation each part of a process gets, from its settings: the
one place that chooses between embedded (in-process queues, result bus and
stores; SQLite) and distributed (RabbitMQ, Redis, PostgreSQL). A part is
built when a role first asks for it (``ingress.runtime``), so each role
opens only the connections it uses.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import dramatiq
from dramatiq.brokers.stub import StubBroker
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.balances import Balances
from billing.balances.memory import MemoryBalances
from billing.balances.redis import RedisBalances
from billing.journal import HoldJournal, JournaledBalances
from billing.ledger import Ledger
from billing.snapshots import LedgerSnapshots
from ingress.limiter import Limiter
from ingress.limiter.memory import MemoryLimiter
from ingress.limiter.redis import RedisLimiter
from scheduler.connections import Connections, dramatiq_broker, probe_redis
from scheduler.listing_store import ListingStore
from scheduler.listing_store.file import FileListingStore
from scheduler.listing_store.redis import RedisListingStore
from scheduler.pool_stats import PoolStatsStore
from scheduler.pool_stats.memory import MemoryPoolStats
from scheduler.pool_stats.redis import RedisPoolStats
from scheduler.queues import DeadLetters, JobQueue, UsageQueue
from scheduler.queues.memory import MemoryJobQueue, MemoryUsageQueue
from scheduler.queues.rabbitmq import RabbitDeadLetters, RabbitJobQueue, RabbitUsageQueue
from scheduler.result_bus import ResultBus
from scheduler.result_bus.memory import MemoryResultBus
from scheduler.result_bus.redis import RedisResultBus
from scheduler.topology import Topology
from scheduler.watched_queue import WatchedJobQueue
from schema.database import create_engine, migrate
from schema.settings import Settings
from workers.breaker_store.memory import MemoryBreakerStore
from workers.breaker_store.redis import RedisBreakerStore
from workers.breakers import Breakers
from workers.health import HealthLog
from workers.health_store import HealthStore
from workers.health_store.memory import MemoryHealthStore
from workers.health_store.redis import RedisHealthStore
from workers.prober import StoreOpener

LISTINGS_FILE = "provider-listings.json"


class Parts:
    """One process's parts, each built from its settings when a role first
    asks for it: the one place that chooses between in-process and shared."""

    def __init__(self, settings: Settings, connections: Connections, stack: AsyncExitStack) -> None:
        self.settings = settings
        self.topology = Topology(settings.namespace)
        self._connections = connections
        self._stack = stack
        self._queues: tuple[JobQueue, UsageQueue, DeadLetters | None] | None = None
        self._jobs: JobQueue | None = None
        self._results: ResultBus | None = None
        self._health: HealthStore | None = None

    async def jobs(self) -> JobQueue:
        """The job queue, keeping the pool statistics admission reads at
        every enqueue and every job taken."""
        if self._jobs is None:
            jobs, _, _ = await self._transports()
            self._jobs = watched = WatchedJobQueue(jobs, self.pool_stats)
            self._stack.push_async_callback(watched.flush)  # the last counts, before the store closes
        return self._jobs

    async def usage(self) -> UsageQueue:
        return (await self._transports())[1]

    async def dead_letters(self) -> DeadLetters | None:
        return (await self._transports())[2]

    async def _transports(self) -> tuple[JobQueue, UsageQueue, DeadLetters | None]:
        if self._queues is None:
            jobs: JobQueue
            usage: UsageQueue
            dead_letters: DeadLetters | None
            if self.settings.broker_url:
                connection = await self._connections.amqp()
                jobs = RabbitJobQueue(connection, self.topology, persistent=self.settings.persistent_jobs)
                usage = RabbitUsageQueue(connection, self.topology)
                # Read only where the workers' job marks can be seen: without them
                # an answered job would look unrun and be settled at zero.
                dead_letters = RabbitDeadLetters(connection, self.topology) if self.settings.redis_url else None
            else:
                memory_jobs = MemoryJobQueue()
                jobs, usage, dead_letters = memory_jobs, MemoryUsageQueue(), memory_jobs.dead_letters
            self._queues = jobs, usage, dead_letters
        return self._queues

    async def results(self, *, subscribe: bool) -> ResultBus:
        """``subscribe`` opens the shared result subscription (the HTTP API only)."""
        if self._results is None:
            if self.settings.redis_url:
                bus = RedisResultBus(self._connections.shared_redis(), self.topology)
                if subscribe:
                    await bus.start()
                    self._stack.push_async_callback(bus.close)
                self._results = bus
            else:
                self._results = MemoryResultBus()
        return self._results

    @functools.cached_property
    def pool_stats(self) -> PoolStatsStore:
        if self.settings.redis_url:
            # Its own client: admission and the workers' beats must not queue
            # behind the shared pool in an outage.
            return RedisPoolStats(self._connections.stats_redis(), self.topology)
        return MemoryPoolStats()

    @functools.cached_property
    def breakers(self) -> Breakers:
        store = (RedisBreakerStore(self._connections.shared_redis(), self.topology) if self.settings.redis_url
                 else MemoryBreakerStore())  # shared: every worker and ingress sees the same circuits
        return Breakers(store, failures=self.settings.breaker_failures,
                        reset_timeout=self.settings.breaker_reset_timeout)

    @functools.cached_property
    def health(self) -> HealthLog:
        return HealthLog(self._health_store())

    def _health_store(self) -> HealthStore:
        if self._health is None:
            self._health = (RedisHealthStore(self._connections.shared_redis(), self.topology)
                            if self.settings.redis_url else MemoryHealthStore())
        return self._health

    def probe_store(self) -> StoreOpener:
        """How the prober opens the health store on its own event loop: a
        client of its own (distributed), or this process's store."""
        url, topology, store = self.settings.redis_url, self.topology, self._health_store()
        if url is None:
            return lambda: contextlib.nullcontext(store)

        @asynccontextmanager
        async def open_store() -> AsyncIterator[HealthStore]:
            async with probe_redis(url) as client:
                yield RedisHealthStore(client, topology)

        return open_store

    def on_close(self, close: Callable[[], object]) -> None:
        """Call ``close`` when the role's parts close (before its connections)."""
        self._stack.callback(close)

    def probe_broker(self) -> Callable[[], dramatiq.Broker]:
        url = self.settings.broker_url
        return (lambda: dramatiq_broker(url)) if url else StubBroker

    async def accounts(self, *, apply_migrations: bool) -> tuple[AsyncEngine, Ledger, Balances, HoldJournal | None]:
        """The database, the ledger, the balances mirror holds are taken
        against, and the journal that writes holds to the ledger (distributed:
        the caller runs it)."""
        engine = create_engine(self.settings)
        self._stack.push_async_callback(engine.dispose)
        if apply_migrations or self.settings.embedded_database:
            await migrate(engine)
        snapshots = LedgerSnapshots(engine)
        mirror: Balances = MemoryBalances(snapshots)
        if self.settings.redis_url:
            # Shared by every ingress and billing process.
            mirror = RedisBalances(self._connections.shared_redis(), snapshots, self.settings.namespace)
        ledger = Ledger(engine, follow=mirror.apply)
        balances = mirror
        journal: HoldJournal | None = None
        if self.settings.redis_url:
            # Holds go into the ledger too, in the background: a Redis that loses them loses no hold.
            journal = HoldJournal(ledger)
            balances = JournaledBalances(mirror, journal, ledger)
        self._stack.push_async_callback(balances.aclose)
        return engine, ledger, balances, journal

    def limiter(self) -> Limiter:
        if not (self.settings.rate_limit_redis_url or self.settings.redis_url):
            return MemoryLimiter()
        # A Redis that stalls must send admission to the per-process fallback
        # quickly, not hold requests.
        limiter = RedisLimiter(self._connections.limits_redis(), self.topology.rate_limit_prefix)
        self._stack.push_async_callback(limiter.aclose)
        return limiter

    def listings(self) -> ListingStore:
        if self.settings.redis_url:
            return RedisListingStore(self._connections.shared_redis(), self.topology)
        return FileListingStore(self.settings.data_dir / LISTINGS_FILE)
