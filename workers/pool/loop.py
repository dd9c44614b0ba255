"""The worker loop of one provider pool: take a job, check it, run it,
hand it off or end it, report its usage, and only then let the queue
acknowledge it. Each step is its own module in ``workers.pool``; this one
ties them together and decides how a job ended.

A job whose client left (``workers.cancels``) is skipped if it was not
started, or its attempt is stopped (closing the upstream connection): it is
neither retried nor handed on, counts against no circuit, and settles what
the upstream reported so far, else an estimate of the output produced, else
nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time

from scheduler.logs import JOB_ID
from scheduler.queues import JobQueue, UsageQueue
from scheduler.queues.slots import NO_RESERVE, Reserve
from scheduler.result_bus import ResultBus
from scheduler.tracing import Tracing
from schema.catalog import ProviderSpec
from schema.errors import GatewayError, UpstreamError
from schema.jobs import JOB_STATE_GRACE, Job, JobMark, Usage
from schema.metrics import MetricsRegistry
from workers.adapters.base import ProviderAdapter
from workers.breaker_store.memory import MemoryBreakerStore
from workers.breakers import Breakers
from workers.cancels import CancelWatch, JobCancelled, Watch
from workers.health import HealthLog
from workers.metrics import WorkerMetrics
from workers.pool.attempts import Attempts, HandOff
from workers.pool.events import JobRun
from workers.pool.handoff import HandOffs
from workers.pool.intake import Intake, deadline_passed
from workers.pool.tracing import AttemptTrace
from workers.pool.usage import UsageReport, cancelled_usage, ended_usage
from workers.resilience import RetryPolicy

log = logging.getLogger(__name__)


class ProviderPool:
    """One provider's worker loop: serves its queue with at most
    ``concurrency`` jobs in hand, each through the steps above."""

    def __init__(
        self,
        provider: ProviderSpec,
        adapter: ProviderAdapter,
        *,
        jobs: JobQueue,
        results: ResultBus,
        usage: UsageQueue,
        concurrency: int,
        reserve: Reserve = NO_RESERVE,
        drain_timeout: float = 0,
        breakers: Breakers | None = None,
        retries: RetryPolicy | None = None,
        health: HealthLog | None = None,
        cancels: CancelWatch | None = None,
        tracing: Tracing | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        """``reserve``: the slots kept from bulk and batch jobs, and those
        kept for realtime ones alone (``scheduler.queues.slots``). ``cancels`` is the process's
        watch, shared by its pools; without one, the pool runs its own.
        ``tracing``: None unless the process traces."""
        self.provider = provider
        self.adapter = adapter
        self.concurrency = concurrency
        self.reserve = reserve
        self.drain_timeout = drain_timeout
        self._jobs = jobs
        self._results = results
        self._usage = usage
        breakers = breakers if breakers is not None else Breakers(MemoryBreakerStore())
        self._report = UsageReport(usage)
        self._metrics = metrics if metrics is not None else WorkerMetrics(MetricsRegistry())
        self._attempts = Attempts(provider, adapter, breakers=breakers,
                                  health=health if health is not None else HealthLog(),
                                  retries=retries if retries is not None else RetryPolicy(), metrics=self._metrics)
        self._handoffs = HandOffs(jobs=jobs, results=results, breakers=breakers, usage=self._report,
                                  metrics=self._metrics)
        self._intake = Intake(results=results, breakers=breakers, usage=self._report, handoffs=self._handoffs)
        self._own_cancels = cancels is None
        self._cancels = cancels if cancels is not None else CancelWatch(results)
        self._tracing = tracing

    async def run(self) -> None:
        log.info("pool %s serving with concurrency %d (%d kept from bulk and batch jobs, %d of them for realtime "
                 "jobs alone)", self.provider.name, self.concurrency, self.reserve.interactive, self.reserve.realtime)
        watch = asyncio.create_task(self._cancels.run(), name="cancellations") if self._own_cancels else None
        try:
            await self._jobs.serve(self.provider.name, self.concurrency, self.handle, drain_timeout=self.drain_timeout,
                                   reserve=self.reserve)
        finally:
            if watch is not None:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
            await self.adapter.aclose()

    async def handle(self, job: Job, redelivered: bool) -> None:
        # Watched before its cancellation is checked (as it is taken): a
        # cancel announced in between is heard, not missed.
        named = JOB_ID.set(job.id)  # every line logged while it is handled names it
        try:
            with self._cancels.watching(job.id) as watch:
                await self._handle(job, redelivered, watch)
        finally:
            JOB_ID.reset(named)

    async def _handle(self, job: Job, redelivered: bool, watch: Watch) -> None:
        run = JobRun(job, self._results, taken_at=time.time())
        keep = job.deadline - time.time() + JOB_STATE_GRACE
        taken = await self._intake.take(run, keep, redelivered)
        if taken is None:
            return
        self._metrics.waited(job.provider, job.priority, job.queue_wait(run.taken_at) - job.queued_before)
        trace = AttemptTrace.begin(self._tracing, job, run.taken_at) if self._tracing is not None else None
        outcome, failure = "answered", None
        usage: Usage | None = None
        try:
            async with asyncio.timeout(job.deadline - time.time()):
                usage = await watch.run(self._attempts.serve(run, taken.circuits), cancelled=taken.cancelled)
        except JobCancelled:
            log.info("job %s on %s cancelled: its client left%s", job.id, job.provider,
                     "" if run.sent else " before it was answered")
            usage = cancelled_usage(job, run)
            outcome = "cancelled"
        except HandOff as handoff:
            outcome, failure = "failed", handoff.cause.message
            if await self._handoffs.hand_off(job, handoff.cause, keep, waited=job.queue_wait(run.taken_at)):
                if trace is not None:
                    trace.end("handed_off", failure)
                return
            run.fail(handoff.cause)
        except GatewayError as error:
            log.info("job %s on %s failed: %s", job.id, job.provider, error.message)
            outcome, failure = "failed", error.message
            run.fail(error)
        except TimeoutError:
            log.info("job %s on %s passed its deadline", job.id, job.provider)
            outcome, failure = "failed", "deadline passed"
            run.fail(deadline_passed(job, "the request's deadline passed before the provider finished"))
        except Exception:
            # A defect, not an upstream answer: the client still gets a clear
            # error now, and the job still settles, instead of a silent wait.
            log.exception("job %s on %s failed unexpectedly", job.id, job.provider)
            outcome, failure = "failed", "defect"
            run.fail(UpstreamError("the gateway failed to process the provider's answer"))
        if trace is not None:
            trace.end(outcome, failure)
        await run.flush()
        await self._report.settle(job, ended_usage(job, run, usage), run)
        if not run.answered:
            # An answered job needs no ``done`` mark, which would cost a bus
            # round trip per job: a copy redelivered after its usage event
            # reports the usage its ``answered`` mark holds again, and billing
            # settles a job id once. A job that ended otherwise has no mark
            # that says how it ended: ``done`` keeps a copy from ending it again.
            await self._results.mark(job.id, JobMark(state="done", attempt=job.attempt), keep)
