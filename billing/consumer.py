"""The settlement consumer: usage events in, in batches (``billing.settlement``),
one committed charge per job;
and the sweeper that releases holds whose job never reported, takes back
expired trial credits and removes expired files (``scheduler.files``).

Each traced job (``UsageEvent.traceparent``) gets a ``settle`` span in its
request's trace, as long as its batch took: the batch is one transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from billing.balances import Balances
from billing.ledger import Ledger
from billing.metrics import BillingMetrics
from billing.sweeps import release_overdue
from scheduler.files import FileStore
from scheduler.queues import UsageQueue
from scheduler.tracing import Tracing, now, parent
from schema.jobs import UsageEvent
from schema.metrics import MetricsRegistry

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 10.0


class SettlementConsumer:
    def __init__(self, ledger: Ledger, balances: Balances, usage: UsageQueue, *,
                 sweep_interval: float = SWEEP_INTERVAL, tracing: Tracing | None = None,
                 metrics: BillingMetrics | None = None) -> None:
        self._ledger = ledger
        self._tracing = tracing
        self._metrics = metrics if metrics is not None else BillingMetrics(MetricsRegistry())
        self._balances = balances
        self._usage = usage
        self._sweep_interval = sweep_interval

    async def run(self) -> None:
        log.info("billing consumer started")
        async with asyncio.TaskGroup() as group:
            group.create_task(self._usage.serve(self.settle))
            group.create_task(self._sweep())

    async def settle(self, events: Sequence[UsageEvent]) -> None:
        began = now() if self._tracing is not None else 0
        outcome = await self._ledger.settle_many(events)
        self._metrics.settled(events, outcome.settled)
        if self._tracing is not None:
            self._traced(self._tracing, events, began, set(outcome.duplicates))
        if outcome.duplicates:
            log.info("%d jobs were already settled; duplicate usage events ignored (%s …)",
                     len(outcome.duplicates), outcome.duplicates[0], extra={"job_ids": outcome.duplicates})

    @staticmethod
    def _traced(tracing: Tracing, events: Sequence[UsageEvent], began: int, duplicates: set[str]) -> None:
        ended = now()
        for event in events:
            if (context := parent(event.traceparent)) is not None:
                tracing.child("settle", context, began, ended, attributes={
                    "gatewayz.job_id": event.job_id, "gatewayz.batch_size": len(events),
                    "gatewayz.duplicate": event.job_id in duplicates,
                })

    async def _sweep(self) -> None:
        sweeps = (
            (self._ledger.release_expired, logging.WARNING,
             "released %d holds whose jobs never reported before their deadline"),
            (self._release_overdue, logging.WARNING, "gave back %d holds of jobs the ledger never heard of"),
            (self._ledger.expire_grants, logging.INFO, "expired %d credit grants"),
            (FileStore(self._ledger.engine).remove_expired, logging.INFO,
             "removed %d expired (or abandoned) files"),
        )
        while True:
            await asyncio.sleep(self._sweep_interval)
            for sweep, level, done in sweeps:
                try:
                    count = await sweep()
                except Exception:
                    # The sweeper must outlive any failure (the database, the
                    # balances store, or a defect: logged with its traceback),
                    # or holds would never be released again.
                    log.exception("%s failed; will retry", sweep.__name__)
                    continue
                if count:
                    log.log(level, done, count)

    async def _release_overdue(self) -> int:
        return await release_overdue(self._ledger, self._balances)
