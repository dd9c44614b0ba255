"""Settles the jobs that left their queue unserved (``DeadLetters``): a job
that expired while it waited, or that a worker rejected (it could not
report the job's usage). Such a job sent no usage event, so its hold would
wait for the sweeper and the usage of an answered job would be lost.

Its mark on the result bus (``JobMark``) tells how far it got:

- a later attempt has it (it was handed on), or it is ``done``: nothing;
- ``answered``: its client has the answer, so its noted usage is reported;
- otherwise no worker finished it: it settles at zero, which releases its
  hold, then it is marked ``done`` (a late copy of it never runs) and its
  client, if still waiting, gets an error event at once.

Usage goes out as a worker's does, a ``UsageEvent`` with the job's id on
the usage queue, which billing settles once however many copies arrive.
"""

from __future__ import annotations

import asyncio
import logging
import time

from billing.metrics import BillingMetrics
from scheduler.logs import JOB_ID
from scheduler.queues import DeadLetter, UsageQueue
from scheduler.result_bus import ResultBus
from schema.errors import BatchExpired, GatewayError, GatewayTimeout, UpstreamError
from schema.jobs import Job, JobMark, JobOutcome, LineResult, StreamEvent, Usage, UsageEvent, error_data
from schema.metrics import MetricsRegistry

log = logging.getLogger(__name__)

# A started job that expired was requeued by a worker that died or lost its
# channel. A live one ends the job by its deadline and then reports it,
# retrying for some seconds: it is left that long to do so.
ABANDONED_AFTER = 30.0


class DeadLetterReader:
    def __init__(self, results: ResultBus, usage: UsageQueue, *, abandoned_after: float = ABANDONED_AFTER,
                 metrics: BillingMetrics | None = None) -> None:
        self._results = results
        self._metrics = metrics if metrics is not None else BillingMetrics(MetricsRegistry())
        self._usage = usage
        self._abandoned_after = abandoned_after

    async def read(self, letter: DeadLetter) -> None:
        """Settle the job if nobody else will; returns once that is durable."""
        named = JOB_ID.set(letter.job.id)  # every line logged meanwhile names it
        try:
            await self._read(letter)
        finally:
            JOB_ID.reset(named)

    async def _read(self, letter: DeadLetter) -> None:
        job = letter.job
        log.warning("job %s (attempt %d) was dead-lettered from %s: %s", job.id, job.attempt, letter.queue,
                    letter.reason)
        self._metrics.dead_lettered(letter.reason)
        mark = await self._results.marked(job.id)
        if mark is not None and mark.attempt == job.attempt and mark.state == "started" and letter.reason == "expired":
            mark = await self._once_abandoned(job, mark)
        if mark is not None and not _unfinished(job, mark):
            await self._settle_by(job, mark)
            return
        started = mark is not None and mark.attempt == job.attempt and mark.state == "started"
        await self._end(job, _error(letter.reason, started=started))

    async def _once_abandoned(self, job: Job, mark: JobMark) -> JobMark | None:
        wait = job.deadline + self._abandoned_after - time.time()
        if wait <= 0:
            return mark
        log.info("job %s was started; its worker has %.0fs to report it", job.id, wait)
        await asyncio.sleep(wait)
        return await self._results.marked(job.id)

    async def _end(self, job: Job, error: GatewayError) -> None:
        """Settle an unfinished job at zero, then mark it done (a reader that
        stops in between is redone: billing takes the second zero as a
        duplicate), so that a late copy of it never runs, and tell its client
        with the same step. An error ends the client's stream whatever its
        number (the relay takes one from any worker that took over the job)."""
        failed = JobOutcome(status=error.status, error_type=error.type[:64])
        line = LineResult(error=dict(error_data(BatchExpired(error.message) if job.expired() else error)))
        await self._usage.publish(UsageEvent.of(job, Usage(input_tokens=0, output_tokens=0), failed, result=line))
        event: StreamEvent = {"job": job.id, "seq": 0, "kind": "error", "data": error_data(error)}
        before = await self._results.mark(job.id, JobMark(state="done", attempt=job.attempt), job.state_ttl(),
                                          publish=[event], to=job.reply_to)
        if before is not None and not _unfinished(job, before):
            # Only a copy of the same attempt running at once (a duplicated
            # hand-off) gets here; billing keeps whichever usage came first.
            log.warning("job %s moved on (%s) while it was settled at zero", job.id, before.state)
        log.warning("job %s was never finished: settled at zero, its client told: %s", job.id, error.message)

    async def _settle_by(self, job: Job, mark: JobMark) -> None:
        if mark.attempt > job.attempt:
            log.info("job %s: attempt %d has it; nothing to settle here", job.id, mark.attempt)
        elif mark.state == "answered" and mark.usage is not None:
            await self._usage.publish(UsageEvent.of(job, mark.usage))
            await self._results.mark(job.id, JobMark(state="done", attempt=job.attempt), job.state_ttl())
            log.warning("job %s was answered but its usage not reported; reported now", job.id)
        else:
            log.info("job %s was already settled", job.id)


def _unfinished(job: Job, mark: JobMark | None) -> bool:
    """No worker finished this attempt, nor handed it on, nor is finishing it."""
    if mark is None or mark.attempt < job.attempt:
        return True
    return mark.attempt == job.attempt and mark.state in ("started", "handed_off")


def _error(reason: str, *, started: bool) -> GatewayError:
    if reason == "expired" and not started:
        return GatewayTimeout("the request's deadline passed while it was queued")
    return UpstreamError("the gateway could not finish this request; please retry", status=502)
