"""The settlement consumer: usage events in, one committed charge per job."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger import settle
from scheduler.transport import UsageQueue
from schema.jobs import UsageEvent

log = logging.getLogger(__name__)


class SettlementConsumer:
    def __init__(self, engine: AsyncEngine, usage: UsageQueue) -> None:
        self._engine = engine
        self._usage = usage

    async def run(self) -> None:
        log.info("billing consumer started")
        await self._usage.serve(self.settle)

    async def settle(self, event: UsageEvent) -> None:
        if await settle(self._engine, event):
            log.debug("job %s settled", event.job_id)
        else:
            log.info("job %s was already settled; duplicate usage event ignored", event.job_id)
