"""A job's spans at the worker that takes it: its wait in the queue (from
``enqueued_at``, set by the ingress or the worker that handed it on, to
when it was taken) and the attempt on this pool's provider, which ends with
how the job left it. A job that failed over shows one of each per candidate
it reached, all children of its request's span at the ingress.

Only a job whose ingress traced it (``Job.traceparent``) gets spans: a
worker never starts a trace of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.trace import SpanContext

from scheduler.tracing import Tracing, nanoseconds, now, parent
from schema.jobs import Job


@dataclass(slots=True)
class AttemptTrace:
    tracing: Tracing
    job: Job
    parent: SpanContext
    taken: int  # ns

    @classmethod
    def begin(cls, tracing: Tracing, job: Job, taken_at: float) -> AttemptTrace | None:
        """Records the job's queue wait; None if its request is not traced."""
        context = parent(job.traceparent)
        if context is None:
            return None
        trace = cls(tracing, job, context, nanoseconds(taken_at))
        if job.enqueued_at is not None:
            tracing.child("queue wait", context, nanoseconds(job.enqueued_at), trace.taken,
                          attributes=trace._where())
        return trace

    def end(self, outcome: str, error: str | None = None) -> None:
        """Records the attempt. ``outcome``: answered, handed_off, failed or
        cancelled; ``error``: what the client or the next candidate was told."""
        attributes = {**self._where(), "gatewayz.upstream_model": self.job.route.upstream_model,
                      "gatewayz.outcome": outcome}
        self.tracing.child("attempt", self.parent, self.taken, now(), attributes=attributes, error=error)

    def _where(self) -> dict[str, str | int]:
        return {"gatewayz.job_id": self.job.id, "gatewayz.provider": self.job.provider,
                "gatewayz.attempt": self.job.attempt}
