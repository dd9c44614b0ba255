"""Builds what each role of this process needs from its settings, and runs
the background roles (worker pools, billing, the prober).

Which queues, result bus and stores a process uses (embedded or
distributed) is decided in ``ingress.parts`` alone, from the URLs its
settings name; everything above them is the same code in both modes.
Connections are opened by ``scheduler.connections``, and only those a role
uses. Each role builds only its part:
- a worker (``open_workers``): the queues, the result bus, the circuits,
  health and pool statistics; no database;
- billing (``open_billing``): the ledger, the balances mirror, the usage
  queue and the dead letters; no HTTP app, no rate limits;
- the prober (``open_prober``): the health store and dramatiq's broker;
- the batch orchestrator (``gatewayz orchestrator``, ``open_runtime``
  without a subscription): dramatiq's broker for its steps, and every part
  a batch line's release uses;
- the HTTP API (``open_runtime``: ``gatewayz ingress`` and ``serve``): all
  of these, and ``serve`` runs every role beside it (``embedded_roles``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import dramatiq
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.balances import Balances
from billing.consumer import SettlementConsumer
from billing.coupons import CouponBook
from billing.dead_letters import DeadLetterReader
from billing.journal import HoldJournal
from billing.ledger import Ledger
from billing.metrics import BillingMetrics
from ingress.exposition import Exposition, serve_metrics
from ingress.parts import Parts
from ingress.placement import CircuitWatch
from ingress.ratelimit import RateLimits
from scheduler.admission import PoolWatch
from scheduler.batches.actors import run_orchestrator
from scheduler.batches.orchestrator import Orchestrator
from scheduler.batches.store import BatchStore
from scheduler.catalog import Catalog
from scheduler.connections import Connections
from scheduler.files import FileStore
from scheduler.listing_store import ListingStore
from scheduler.queues import DeadLetters, JobQueue, UsageQueue
from scheduler.queues.slots import Reserve
from scheduler.result_bus import ResultBus
from scheduler.topology import Topology
from scheduler.tracing import Tracing, open_tracing
from schema.catalog import GatewayConfig
from schema.metrics import MetricsRegistry
from schema.settings import Settings
from workers.adapters import build_adapter
from workers.breakers import Breakers
from workers.cancels import CancelWatch
from workers.health import HealthLog
from workers.metrics import WorkerMetrics
from workers.pool import ProviderPool
from workers.prober import Prober, StoreOpener, run_prober
from workers.resilience import RetryPolicy

log = logging.getLogger(__name__)

EMBEDDED_CONCURRENCY = 64


@dataclass(kw_only=True)
class Role:
    """What every role has: its settings and the background tasks it runs."""

    settings: Settings
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    tracing: Tracing | None = None  # None unless an OTEL_* exporter is configured (``scheduler.tracing``)
    metrics: MetricsRegistry = field(init=False)  # this role's own: never prometheus_client's global one

    def __post_init__(self) -> None:
        self.metrics = MetricsRegistry(multiprocess_dir=self.settings.metrics_dir)

    def serve_metrics(self) -> None:
        """``GET /metrics`` on ``GATEWAYZ_METRICS_PORT``, if set (a role without the HTTP API)."""
        if self.settings.metrics_port is not None:
            exposition = Exposition(self.metrics, token=self.settings.metrics_token)
            self._spawn(serve_metrics(exposition, self.settings.metrics_host, self.settings.metrics_port),
                        "metrics")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(_report_exit)
        self.tasks.append(task)


@dataclass(kw_only=True)
class WorkerRuntime(Role):
    """What serving jobs needs (``gatewayz worker``)."""

    catalog: Catalog
    jobs: JobQueue
    results: ResultBus
    usage: UsageQueue
    breakers: Breakers
    health: HealthLog
    cancels: CancelWatch | None = None  # one subscription to cancellations for all this process's pools
    worker_metrics: WorkerMetrics | None = None  # shared by this process's pools

    def start_pool(self, provider: str, concurrency: int) -> ProviderPool:
        spec = self.catalog.provider(provider)
        if self.cancels is None:
            self.cancels = CancelWatch(self.results)
            self._spawn(self.cancels.run(), "cancellations")
        if self.worker_metrics is None:
            self.worker_metrics = WorkerMetrics(self.metrics)
        pool = ProviderPool(
            spec,
            build_adapter(spec, self.settings),
            jobs=self.jobs,
            results=self.results,
            usage=self.usage,
            concurrency=concurrency,
            reserve=Reserve.of_pool(concurrency, self.settings.reserved_slots, self.settings.realtime_slots),
            drain_timeout=self.settings.drain_timeout,
            breakers=self.breakers,
            retries=RetryPolicy.from_settings(self.settings),
            health=self.health,
            cancels=self.cancels,
            tracing=self.tracing,
            metrics=self.worker_metrics,
        )
        self._spawn(pool.run(), f"pool {provider}")
        return pool


@dataclass(kw_only=True)
class BillingRuntime(Role):
    """What settling needs (``gatewayz billing``)."""

    ledger: Ledger
    balances: Balances  # what holds are taken against: the ledger's balances, mirrored
    usage: UsageQueue
    results: ResultBus  # the job marks a dead letter is settled by
    dead_letters: DeadLetters | None = None  # none on RabbitMQ without Redis: the job marks are out of sight

    def start_billing(self) -> None:
        metrics = BillingMetrics(self.metrics)
        self._spawn(SettlementConsumer(self.ledger, self.balances, self.usage, tracing=self.tracing,
                                       metrics=metrics).run(), "billing")
        if self.dead_letters is None:
            log.warning("dead letters are not read: this billing process has no GATEWAYZ_REDIS_URL (job marks)")
            return
        reader = DeadLetterReader(self.results, self.usage, metrics=metrics)
        self._spawn(self.dead_letters.serve(reader.read), "dead letters")


@dataclass(kw_only=True)
class ProberRuntime(Role):
    """What probing needs (``gatewayz prober``): the health store, opened on
    the prober's own event loop, and dramatiq's broker."""

    catalog: Catalog
    health: HealthLog
    probe_store: StoreOpener
    probe_broker: Callable[[], dramatiq.Broker]

    def start_prober(self) -> None:
        """The active prober (``workers.prober``), if an interval is set;
        one per process (dramatiq's AsyncIO loop is process-wide)."""
        if not self.settings.probe_interval:
            return
        prober = Prober(tuple(self.catalog.providers.values()), self.settings, self.probe_store)
        queue = Topology(self.settings.namespace).prober_queue
        self._spawn(run_prober(prober, self.probe_broker(), queue), "prober")


@dataclass(frozen=True, slots=True)
class BatchParts:
    """What the batch API and its orchestrator share: the batches' store,
    the orchestrator's steps (cancelling is one), and the dramatiq broker
    and queue its steps run on (an in-process stub embedded: the API's
    process then runs them too)."""

    store: BatchStore
    orchestrator: Orchestrator
    broker: dramatiq.Broker
    queue: str


@dataclass(kw_only=True)
class Runtime(WorkerRuntime, BillingRuntime, ProberRuntime):
    """The HTTP API's process: every part, so that ``gatewayz serve`` can run
    every role beside the API."""

    engine: AsyncEngine
    coupons: CouponBook
    rate_limits: RateLimits
    pools: PoolWatch
    circuits: CircuitWatch  # this process's copy of the shared circuits, for choosing where jobs start
    listings: ListingStore  # providers' last good model lists (``ingress.catalog_refresh``)
    files: FileStore  # uploaded files (``/v1/files``), in the database
    batches: BatchParts = field(init=False)

    def start_orchestrator(self) -> None:
        """Run the batches' steps in this process (``scheduler.batches.actors``);
        one per process (its dramatiq worker is the broker's)."""
        self._spawn(run_orchestrator(self.batches.orchestrator, self.batches.broker, self.batches.queue,
                                     step_interval=self.settings.batch_step_interval,
                                     rewind=not self.settings.broker_url), "batch orchestrator")


def _report_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped", task.get_name(), exc_info=task.exception())


@asynccontextmanager
async def _opened(settings: Settings, role: str) -> AsyncIterator[tuple[Parts, Tracing | None]]:
    """The parts of a role, closed (then their connections) when it ends,
    and its tracing, whose spans are flushed after everything else closed."""
    async with AsyncExitStack() as stack:
        tracing = stack.enter_context(open_tracing(settings, role))
        connections = Connections(settings)
        stack.push_async_callback(connections.aclose)  # every part that uses them closes first
        yield Parts(settings, connections, stack), tracing


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    config: GatewayConfig,
    *,
    subscribe: bool = True,
    apply_migrations: bool = False,
) -> AsyncIterator[Runtime]:
    """Open every part the HTTP API (and ``serve``'s roles) needs; close them all on exit.

    ``subscribe`` opens the shared result subscription.
    """
    async with _opened(settings, "ingress") as (parts, tracing):
        jobs = await parts.jobs()
        results = await parts.results(subscribe=subscribe)
        engine, ledger, balances, journal = await parts.accounts(apply_migrations=apply_migrations)
        limiter = parts.limiter()
        runtime = Runtime(
            settings=settings, catalog=Catalog(config), jobs=jobs, results=results, usage=await parts.usage(),
            dead_letters=await parts.dead_letters(), breakers=parts.breakers, health=parts.health, engine=engine,
            ledger=ledger, balances=balances, coupons=CouponBook(ledger),
            rate_limits=RateLimits(config.plans, config.rate_limits, limiter),
            pools=PoolWatch(jobs, parts.pool_stats, settings), circuits=CircuitWatch(parts.breakers),
            listings=parts.listings(), files=FileStore(engine), probe_store=parts.probe_store(),
            probe_broker=parts.probe_broker(), tracing=tracing,
        )
        from ingress.batch_release import BatchRelease  # it submits through the runtime built here

        store, broker = BatchStore(engine), parts.probe_broker()()
        parts.on_close(broker.close)
        runtime.batches = BatchParts(store, Orchestrator(store, BatchRelease(runtime), runtime.files.read, settings),
                                     broker, Topology(settings.namespace).batch_queue)
        async with _running(runtime, journal):
            yield runtime


@asynccontextmanager
async def open_workers(settings: Settings, config: GatewayConfig) -> AsyncIterator[WorkerRuntime]:
    """What ``gatewayz worker`` needs: no database, no HTTP app."""
    async with _opened(settings, "worker") as (parts, tracing):
        runtime = WorkerRuntime(settings=settings, catalog=Catalog(config), jobs=await parts.jobs(),
                                results=await parts.results(subscribe=False), usage=await parts.usage(),
                                breakers=parts.breakers, health=parts.health, tracing=tracing)
        async with _running(runtime, None):
            yield runtime


@asynccontextmanager
async def open_billing(settings: Settings) -> AsyncIterator[BillingRuntime]:
    """What ``gatewayz billing`` needs: the ledger and the queues it settles from."""
    async with _opened(settings, "billing") as (parts, tracing):
        _engine, ledger, balances, journal = await parts.accounts(apply_migrations=False)
        runtime = BillingRuntime(settings=settings, ledger=ledger, balances=balances, usage=await parts.usage(),
                                 results=await parts.results(subscribe=False),
                                 dead_letters=await parts.dead_letters(), tracing=tracing)
        async with _running(runtime, journal):
            yield runtime


@asynccontextmanager
async def open_prober(settings: Settings, config: GatewayConfig) -> AsyncIterator[ProberRuntime]:
    """What ``gatewayz prober`` needs: the health store and dramatiq's broker."""
    async with _opened(settings, "prober") as (parts, _tracing):
        runtime = ProberRuntime(settings=settings, catalog=Catalog(config), health=parts.health,
                                probe_store=parts.probe_store(), probe_broker=parts.probe_broker())
        async with _running(runtime, None):
            yield runtime


@asynccontextmanager
async def _running(role: Role, journal: HoldJournal | None) -> AsyncIterator[None]:
    """Stops the role's tasks before its parts close."""
    if journal is not None:
        role._spawn(journal.run(), "hold journal")
    try:
        yield
    finally:
        await _stop(role.tasks)


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
    runtime.start_orchestrator()
