"""A job's spans at the worker that takes it: its wait in the queue,
recorded when it is taken (from ``enqueued_at``, set by the ingress or the
worker that handed it on), and the attempt on this pool's provider, which
ends with how the job left it. A job that failed over shows one of each per
candidate it reached, all children of its request's span at the ingress.

Only a job whose ingress traced it (``Job.traceparent``) gets spans: a
worker never starts a trace of its own.
"""

from __future__ import annotations

from opentelemetry.trace import Span, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from scheduler.tracing import nanoseconds, parent
from schema.jobs import Job


def start_attempt(tracer: Tracer, job: Job, taken_at: float) -> Span | None:
    """Records the job's queue wait and starts its attempt's span; None if
    its request is not traced."""
    context = parent(job.traceparent)
    if context is None:
        return None
    where: dict[str, AttributeValue] = {"gatewayz.job_id": job.id, "gatewayz.provider": job.provider,
                                        "gatewayz.attempt": job.attempt}
    taken = nanoseconds(taken_at)
    if job.enqueued_at is not None:
        tracer.start_span("queue wait", context=context, start_time=nanoseconds(job.enqueued_at),
                          attributes=where).end(end_time=taken)
    return tracer.start_span("attempt", context=context, start_time=taken,
                             attributes={**where, "gatewayz.upstream_model": job.route.upstream_model})


def end_attempt(span: Span, outcome: str, error: str | None = None) -> None:
    """``outcome``: answered, handed_off, failed or cancelled; ``error``
    what the client or the next candidate was told."""
    span.set_attribute("gatewayz.outcome", outcome)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()
