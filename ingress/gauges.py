"""The gauges read at scrape time from what the process keeps already:
each pool's queue depth by class, jobs in flight, consumers, service rate
and estimated wait (``scheduler.admission.PoolWatch``), every circuit's
state (``workers.breakers``), the open holds (the balances mirror), and the
batches by status with their lines by outcome (the database's counters,
which only grow: ``gatewayz_batch_lines_total`` is a counter read there,
exact across every process that records results).

Nothing on the request path feeds them. A scrape reads them (``refresh``,
awaited by ``/metrics`` before it writes the exposition); a store that does
not answer leaves its gauges out of that scrape rather than failing it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import DBAPIError

from billing.balances import Balances
from scheduler.admission import PoolUnreadable, PoolWatch
from scheduler.batches.store import BatchStore
from scheduler.priority import BATCH_PRIORITY, MESSAGE_PRIORITY
from schema.errors import TransportUnavailable
from schema.money import micros_to_credits
from workers.breakers import Breakers

log = logging.getLogger(__name__)

CIRCUIT_STATES = {"closed": 0, "half-open": 1, "open": 2}
# Message priorities by their class's name (the batch API's below every class).
PRIORITY_NAMES = {**{level: name for name, level in MESSAGE_PRIORITY.items()}, BATCH_PRIORITY: "batch"}


class LiveGauges(Collector):
    def __init__(self, providers: Iterable[str], pools: PoolWatch, breakers: Breakers, balances: Balances,
                 batches: BatchStore | None = None) -> None:
        self._providers = tuple(providers)
        self._batches = batches
        self._pools = pools
        self._breakers = breakers
        self._balances = balances
        self._read: list[Metric] = []

    async def refresh(self) -> None:
        """Read every gauge now, for the next ``collect``."""
        self._read = [*await self._pool_gauges(), *await self._circuit_gauges(), *await self._hold_gauges(),
                      *await self._batch_gauges()]

    def collect(self) -> Iterator[Metric]:
        return iter(self._read)

    async def _pool_gauges(self) -> list[Metric]:
        depth = GaugeMetricFamily("gatewayz_queue_depth", "Jobs waiting in a pool's queue, by priority class",
                                  labels=["pool", "priority"])
        in_flight = GaugeMetricFamily("gatewayz_jobs_in_flight", "Jobs a pool's workers hold", labels=["pool"])
        rate = GaugeMetricFamily("gatewayz_pool_service_rate", "Jobs a pool finishes per second", labels=["pool"])
        consumers = GaugeMetricFamily("gatewayz_pool_consumers", "Live worker processes of a pool", labels=["pool"])
        wait = GaugeMetricFamily("gatewayz_estimated_wait_seconds",
                                 "The queue wait admission control estimates for a new job, by class",
                                 labels=["pool", "priority"])
        views = await asyncio.gather(*(self._pools.view(provider) for provider in self._providers),
                                     return_exceptions=True)
        for provider, view in zip(self._providers, views, strict=True):
            if isinstance(view, PoolUnreadable):
                log.warning("metrics: %s", view.message)
                continue
            if isinstance(view, BaseException):
                raise view
            for level, name in PRIORITY_NAMES.items():
                depth.add_metric([provider, name], view.depth.get(level, 0))
            in_flight.add_metric([provider], view.in_flight)
            rate.add_metric([provider], view.service_rate)
            consumers.add_metric([provider], view.consumers)
            for name, seconds in self._pools.estimates(view, MESSAGE_PRIORITY).items():
                if seconds is not None:
                    wait.add_metric([provider, name], seconds)
        return [depth, in_flight, rate, consumers, wait]

    async def _circuit_gauges(self) -> list[Metric]:
        circuits = GaugeMetricFamily("gatewayz_circuit_state",
                                     "A circuit's state (0 closed, 1 half-open, 2 open); model empty: the provider's",
                                     labels=["provider", "model"])
        try:
            health = await self._breakers.health(self._providers)
        except TransportUnavailable as error:
            log.warning("metrics: the circuits cannot be read: %s", error.message)
            return []
        for provider in health:
            circuits.add_metric([provider.provider, ""], CIRCUIT_STATES[provider.circuit.state])
            for model, view in provider.models.items():
                circuits.add_metric([provider.provider, model], CIRCUIT_STATES[view.state])
        return [circuits]

    async def _hold_gauges(self) -> list[Metric]:
        try:
            count, held = await self._balances.outstanding()
        except TransportUnavailable as error:
            log.warning("metrics: the balances cannot be read: %s", error.message)
            return []
        return [GaugeMetricFamily("gatewayz_holds_outstanding", "Open credit holds (jobs not settled yet)",
                                  value=count),
                GaugeMetricFamily("gatewayz_credits_held", "Credits the open holds set aside",
                                  value=float(micros_to_credits(held)))]

    async def _batch_gauges(self) -> list[Metric]:
        if self._batches is None:
            return []
        try:
            statuses, outcomes = await self._batches.census()
        except (DBAPIError, OSError) as error:
            log.warning("metrics: the batches cannot be read: %s", error)
            return []
        batches = GaugeMetricFamily("gatewayz_batches", "Batches by status", labels=["status"])
        for status, count in statuses.items():
            batches.add_metric([status], count)
        lines = CounterMetricFamily("gatewayz_batch_lines", "Batch lines given a result, by outcome",
                                    labels=["outcome"])
        for outcome, count in outcomes.items():
            lines.add_metric([outcome], count)
        return [batches, lines]
