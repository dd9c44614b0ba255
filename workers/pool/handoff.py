"""Hand-off and failover: a job whose attempt failed before anything
reached its client goes to the model's next candidate whose circuits are
not open, re-enqueued on that provider's queue with that candidate's
``attempt`` (same id, deadline and hold). This delivery is then
acknowledged without a usage event: the worker that finishes the job
settles it. A job only moves forward through its candidates.

Job marks keep hand-offs exactly once: the ``handed_off`` mark is written
before the enqueue, so a stale or duplicated copy of the attempt that handed
the job on never runs; a redelivered copy whose hand-off may have been lost
redoes it, to the same attempt.
"""

from __future__ import annotations

import logging
import time

from scheduler.queues import JobQueue
from scheduler.result_bus import ResultBus
from schema.errors import BrokerUnavailable, GatewayError, GatewayTimeout, UpstreamError
from schema.jobs import JOB_STATE_GRACE, Job, JobMark
from workers.breakers import Breakers
from workers.metrics import WorkerMetrics
from workers.pool.events import JobRun
from workers.pool.usage import UsageReport, no_usage

log = logging.getLogger(__name__)


class HandOffs:
    """Moves one pool's failed jobs on to their next candidates."""

    def __init__(self, *, jobs: JobQueue, results: ResultBus, breakers: Breakers, usage: UsageReport,
                 metrics: WorkerMetrics) -> None:
        self._jobs = jobs
        self._results = results
        self._breakers = breakers
        self._usage = usage
        self._metrics = metrics

    async def hand_off(self, job: Job, cause: GatewayError, keep: float, *, waited: float | None = None,
                       to: int | None = None) -> bool:
        """Give the job to its next candidate whose circuits let it through
        (or to attempt ``to``, redoing a hand-off); False if there is none,
        or it could not be queued (its deadline passed, or the broker
        failed), and the job ends here with the cause. ``waited``: its queue
        wait so far, which the next attempt's adds to."""
        if to is None:
            to = await self._next_candidate(job)
            if to is None:
                log.info("job %s: %s failed before answering (%s); every later candidate's circuit is open",
                         job.id, job.provider, cause.message)
                return False
        onward = job.model_copy(update={"attempt": to,
                                        "queued_before": waited if waited is not None else job.queued_before})
        # Marked before it is queued: from here on this attempt never runs again.
        await self._results.mark(job.id, JobMark(state="handed_off", attempt=to, handed_by=job.attempt), keep)
        try:
            await self._jobs.enqueue(onward)
        except (BrokerUnavailable, GatewayTimeout) as error:  # not queued: the broker failed, or too late
            log.error("job %s: could not hand it to %s (%s); ending it", job.id, onward.provider, error.message)
            # A later attempt of it, if the enqueue did go through, must not run.
            await self._results.mark(job.id, JobMark(state="done", attempt=onward.attempt), keep)
            return False
        log.info("job %s: %s failed before answering (%s); handed to %s", job.id, job.provider, cause.message,
                 onward.provider)
        self._metrics.failed_over(job.provider, onward.provider)
        return True

    async def _next_candidate(self, job: Job) -> int | None:
        """The attempt of the first later candidate whose circuits are not
        open: a job does not travel through queues only to be refused."""
        later = job.routes[job.attempt + 1:]
        for offset, wait in enumerate(await self._breakers.closed_in(later)):
            if wait == 0:
                return job.attempt + 1 + offset
        return None

    async def handed_on(self, job: Job, mark: JobMark, redelivered: bool) -> None:
        """A copy of an attempt that already handed the job on. If its worker
        died between the mark and the enqueue, the hand-off may be lost: redo
        it, to the same attempt (a duplicate it makes is dropped by that
        attempt's mark)."""
        if redelivered and mark.state == "handed_off" and mark.handed_by == job.attempt:
            log.warning("job %s: redelivered after handing it to attempt %d; handing it again", job.id, mark.attempt)
            keep = job.deadline - time.time() + JOB_STATE_GRACE
            if not await self.hand_off(job, UpstreamError("the worker handing this request on stopped"), keep,
                                       to=mark.attempt):
                run = JobRun(job.model_copy(update={"attempt": mark.attempt}), self._results)
                run.fail(GatewayTimeout("the request could not be handed to another provider in time"))
                await run.flush()
                await self._usage.settle(run.job, no_usage(), run)
            return
        log.info("job %s: attempt %d is stale (attempt %d has it); acknowledged", job.id, job.attempt, mark.attempt)
