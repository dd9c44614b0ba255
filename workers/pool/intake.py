"""Taking a job: mark it ``started`` (reading the mark it had and whether
its client already left, in one round trip, with the provider's circuits
alongside), then decide whether it runs at all.

A job does not run when:
- its state cannot be recorded (the bus is down): it settles at zero;
- a later attempt has it (it was handed on): ``workers.pool.handoff``;
- it is a duplicate of an attempt another copy runs;
- it is a redelivered copy of an attempt a worker already started (that
  worker died or lost its channel): it is never run again, since the client
  may already have part or all of an answer (a batch line, which has no
  client, does run again: its usage event, which carries its answer, was
  not sent, or settles once if it was);
- it is stale: its deadline passed while it waited, or it waited longer than
  its client allowed (RabbitMQ expires messages only at a queue's head).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from scheduler.result_bus import ResultBus
from schema.circuits import CircuitRecord
from schema.errors import BatchExpired, BusUnavailable, GatewayError, GatewayTimeout, QueueTimeout, UpstreamError
from schema.jobs import Job, JobMark
from workers.breakers import Breakers
from workers.pool.events import JobRun
from workers.pool.handoff import HandOffs
from workers.pool.usage import UsageReport, no_usage

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Taken:
    """A job that runs: whether its client already left, and its circuits as it was taken."""

    cancelled: bool
    circuits: list[CircuitRecord] | None


class Intake:
    """Takes one pool's jobs off its queue."""

    def __init__(self, *, results: ResultBus, breakers: Breakers, usage: UsageReport, handoffs: HandOffs) -> None:
        self._results = results
        self._breakers = breakers
        self._usage = usage
        self._handoffs = handoffs

    async def take(self, run: JobRun, keep: float, redelivered: bool) -> Taken | None:
        """Mark the job started; None if it must not run (it was dealt with here)."""
        job = run.job
        try:
            # The circuits are read alongside: the first attempt needs them, unless the job ends here.
            (before, cancelled), circuits = await asyncio.gather(
                self._results.take(job.id, JobMark(state="started", attempt=job.attempt), keep),
                self._breakers.load(job.provider, job.route.upstream_model))
        except BusUnavailable as error:
            # Without the mark a redelivery could answer twice, and without
            # the bus its client hears nothing: settle it at zero (closing its
            # hold) instead of leaving it to the dead letters and the sweeper.
            log.error("job %s: its state cannot be recorded (%s); not run, not charged", job.id, error)
            await self._usage.settle(job, no_usage())
            return None
        if before is not None and before.attempt > job.attempt:
            await self._handoffs.handed_on(job, before, redelivered)
            return None
        rerun = redelivered and job.batch is not None and before is not None and before.state == "started"
        if before is not None and before.attempt == job.attempt and before.state != "handed_off" and not rerun:
            if redelivered:
                await self._resume(run, before, keep)
            else:
                # A second copy of a hand-off (its sender died before its
                # ack and the hand-off was redone): the first copy runs it.
                log.warning("job %s: a duplicate of attempt %d; dropped", job.id, job.attempt)
            return None
        reason = stale(job, run.taken_at)
        if reason is not None:
            log.warning("job %s: %s; skipped", job.id, reason.message)
            run.fail(reason)
            await run.flush()
            await self._usage.settle(job, no_usage(), run)
            return None
        if rerun:
            log.warning("job %s (a batch line) was interrupted mid-way; running it again", job.id)
        return Taken(cancelled=cancelled, circuits=circuits)

    async def _resume(self, run: JobRun, before: JobMark, keep: float) -> None:
        """A redelivered job that a worker had already started:
        - ``done``: only acknowledge it;
        - ``answered``: the client got its answer (the final event went out
          with the mark); record the usage the worker noted (again, if its
          worker stopped after its usage event but before its ack: billing
          settles a job once);
        - ``started``: end its stream with an error and charge nothing for
          the interrupted attempt."""
        job = run.job
        if before.state == "done":
            log.info("job %s was redelivered after it finished; acknowledged", job.id)
        elif before.state == "answered" and before.usage is not None:
            log.warning("job %s was redelivered after it answered; recording its usage", job.id)
            await self._usage.settle(job, before.usage)
        else:
            log.warning("job %s was interrupted mid-way (its worker stopped); ending it with an error", job.id)
            run.fail(UpstreamError("the worker serving this request stopped; please retry", status=502))
            await run.flush()
            await self._usage.settle(job, no_usage(), run)
        await self._results.mark(job.id, JobMark(state="done", attempt=job.attempt), keep)


def stale(job: Job, taken_at: float) -> GatewayError | None:
    """Why a job taken now must not run: its deadline passed while it was
    queued, or it waited longer than its client allowed."""
    if job.expired(taken_at):
        return deadline_passed(job, "the request's deadline passed while it was queued")
    waited = job.queue_wait(taken_at)
    if job.max_queue_wait is not None and waited > job.max_queue_wait:
        return QueueTimeout(f"the request waited {waited:.1f}s in the queue, longer than its "
                            f"x-gatewayz-max-queue-ms of {job.max_queue_wait * 1000:.0f}")
    return None


def deadline_passed(job: Job, message: str) -> GatewayTimeout:
    """The error a job past its deadline ends with: a batch line's deadline
    is its batch's completion window, and it ends ``batch_expired``."""
    if job.batch is not None:
        return BatchExpired("the batch's completion window ended before this request ran")
    return GatewayTimeout(message)
