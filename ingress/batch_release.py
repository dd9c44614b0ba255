"""Batch lines become jobs: each line is checked and routed like a request
to its endpoint, held at its worst case (at the batch discount) and queued
at the batch priority, below every interactive class, with the batch's
completion window as its deadline.

What differs from a request (``ingress.submit``): no admission control and
no rate limits (a line waits in its queue for idle capacity until its
window ends; the orchestrator bounds how many wait), no subscription (its
answer goes on its usage event), and a line refused here (an unknown
model, a bad body, credit that ran out) gets that error as its result
rather than failing the batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from decimal import Decimal

from billing.admission import bound_output, check_holdable, worst_case_usage
from billing.balances import Reservation
from billing.pricing import cost_of
from ingress.runtime import Runtime
from ingress.submit import HOLD_GRACE, candidates
from scheduler.batches.orchestrator import Refused
from scheduler.batches.store import Batch, Line
from scheduler.priority import BATCH_PRIORITY
from schema.anthropic import check_messages_request
from schema.batches import line_job_id
from schema.errors import GatewayError, TransportUnavailable
from schema.jobs import BatchLine, ClientDialect, DialectObject, Job, JobKind, Price, error_data
from schema.media import check_embeddings_request
from schema.openai import check_chat_request

log = logging.getLogger(__name__)

# Each endpoint a batch may name: how its requests are checked, their kind and dialect.
ENDPOINTS: dict[str, tuple[Callable[[object], DialectObject], JobKind, ClientDialect]] = {
    "/v1/chat/completions": (check_chat_request, "chat", "openai"),
    "/v1/embeddings": (check_embeddings_request, "embeddings", "openai"),
    "/v1/messages": (check_messages_request, "chat", "anthropic"),
}


def discounted(price: Price, percent: Decimal) -> Price:
    """``price`` less the batch discount, every part of it."""
    keep = (Decimal(100) - percent) / Decimal(100)
    return Price(input_per_mtok=price.input_per_mtok * keep, output_per_mtok=price.output_per_mtok * keep,
                 per_image=price.per_image * keep)


class BatchRelease:
    """Queues batch lines as jobs through this process's parts."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def release(self, batch: Batch, lines: list[Line]) -> tuple[int, list[Refused]]:
        """The lines' jobs are held and queued together (their publisher
        confirms overlap): a line that could not be queued for an outage
        ends the release there, and those after it that were queued are
        queued again next step as the same jobs."""
        refused: list[Refused] = []
        jobs: list[tuple[int, Line, Job]] = []
        for index, line in enumerate(lines):
            try:
                job = self._job(batch, line)
            except GatewayError as error:
                refused.append(Refused(line, dict(error_data(error))))
                continue
            waits = await self._runtime.circuits.closed_in(job.routes)
            if all(wait > 0 for wait in waits):
                lines = lines[:index]  # every candidate's circuit is open: the line waits for the next step
                break
            job.attempt = waits.index(min(waits))
            jobs.append((index, line, job))
        outcomes = await asyncio.gather(*(self._queue(job) for _, _, job in jobs), return_exceptions=True)
        done = len(lines)
        for (index, line, _), outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, TransportUnavailable):
                log.warning("batch %s: line %d not queued (%s); tried again next step", batch.id, line.line,
                            outcome.message)
                done = min(done, index)
            elif isinstance(outcome, GatewayError):
                refused.append(Refused(line, dict(error_data(outcome))))
            elif isinstance(outcome, BaseException):
                raise outcome
        return done, refused

    def _job(self, batch: Batch, line: Line) -> Job:
        runtime = self._runtime
        check, kind, dialect = ENDPOINTS[batch.endpoint]
        body = check(line.body)
        route = runtime.catalog.route(body["model"])
        payload = {name: value for name, value in body.items() if name not in ("model", "stream")}
        model_limit = route.spec.max_output_tokens if route.spec else None
        if kind == "chat" and dialect == "openai":
            bound_output(payload, model_limit)
        price = discounted(route.price, runtime.catalog.config.pricing.batch_discount_percent)
        worst_case = cost_of(worst_case_usage(payload, model_limit, kind), price)
        check_holdable(worst_case)
        return Job(
            id=line_job_id(batch.id, line.line), kind=kind, dialect=dialect, account_id=batch.account_id,
            key_id=batch.key_id, model=route.model, routes=candidates(runtime, route, payload, dialect, kind),
            payload=payload, created_at=time.time(), deadline=batch.expires_at, price=price,
            priority=BATCH_PRIORITY, hold=worst_case,
            batch=BatchLine(batch_id=batch.id, line=line.line, custom_id=line.custom_id),
        )

    async def _queue(self, job: Job) -> None:
        """Hold the line's worst case, then queue it (a hold whose job was
        not queued is given back: nothing else would settle it)."""
        balances = self._runtime.balances
        await balances.reserve(Reservation(job.id, job.account_id, job.key_id, job.hold or 0, job.created_at,
                                           expires_at=job.deadline + HOLD_GRACE))
        try:
            await self._runtime.jobs.enqueue(job)
        except BaseException:
            await balances.cancel(job.id, job.account_id)
            raise
