"""Usage reporting: every job ends with exactly one durable usage event,
which settles it and closes its hold, and what that event charges when the
upstream did not say.

A job that fails before producing anything reports zero usage (no charge);
a stream cut after some output is charged for what was delivered (an
estimate when the upstream reported nothing); a job stopped for its client's
leaving is charged what the upstream reported so far, raised to what was
produced.
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from scheduler.queues import UsageQueue
from schema.errors import BrokerUnavailable
from schema.jobs import Job, Usage, UsageEvent
from workers.pool.events import JobRun

log = logging.getLogger(__name__)

USAGE_RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


def no_usage() -> Usage:
    return Usage(input_tokens=0, output_tokens=0)


class UsageReport:
    """Publishes the usage events of one pool's jobs."""

    def __init__(self, usage: UsageQueue) -> None:
        self._usage = usage

    async def settle(self, job: Job, usage: Usage, run: JobRun | None = None) -> None:
        """Report the job's usage, how ``run`` ended when it ran here, and a
        batch line's answer; the job is acknowledged only after this returns."""
        await self.record(UsageEvent.of(job, usage, run.outcome() if run is not None else None,
                                        result=run.line_result if run is not None else None))

    async def record(self, event: UsageEvent) -> None:
        """Publish the usage event, retrying through a broker hiccup."""
        for delay in USAGE_RETRY_DELAYS:
            try:
                await self._usage.publish(event)
                return
            except BrokerUnavailable as error:  # not durable yet
                log.warning("usage of job %s not recorded yet (%s); retrying in %gs", event.job_id, error.message,
                            delay)
                await asyncio.sleep(delay)
        await self._usage.publish(event)  # last try: failing now dead-letters the job, kept for reconciliation


def ended_usage(job: Job, run: JobRun, usage: Usage | None) -> Usage:
    """What a job that ended is charged: the usage its attempt settled on,
    else an estimate of what reached its client, else nothing."""
    if usage is not None:
        return usage
    return estimate(job, run.output_chars) if run.produced else no_usage()


def cancelled_usage(job: Job, run: JobRun) -> Usage:
    """What a job stopped for its client's leaving is charged: the usage the
    upstream reported so far (Anthropic's input at ``message_start``), with
    its output raised to the estimate of the output produced; else that
    estimate; nothing when nothing was reported or produced."""
    produced = estimate(job, run.output_chars)
    if run.reported is not None:
        if run.reported.output_tokens >= produced.output_tokens:
            return run.reported
        return run.reported.model_copy(update={"output_tokens": produced.output_tokens, "reported": False})
    return produced if run.produced else no_usage()


def estimate(job: Job, output_chars: int) -> Usage:
    """About four characters a token: used only when the upstream reported nothing."""
    prompt_chars = len(orjson.dumps(job.payload))
    return Usage(input_tokens=-(-prompt_chars // 4), output_tokens=-(-output_chars // 4), reported=False)
