"""One job-submitting request as an operator sees it: its span at the
ingress, the root of its trace (continuing the client's ``traceparent``),
with a child span per step (admission, hold, enqueue, relay), and the one
log line written when it ends (``gatewayz.requests``: job, trace, key,
account, model, provider, status, tokens, cost, queue wait, latency).

``ingress.edge`` makes an ``Exchange`` for each request to a hot endpoint
only if the process traces or that log line is enabled; ``submit`` tells
it the job and its first event, the relay the stream's usage. A step's span
is made from two clock readings when it ends: no context is entered or left.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from opentelemetry.trace import SpanContext, SpanKind
from starlette.responses import Response
from starlette.types import Scope

from billing.pricing import charge
from scheduler.tracing import Tracing, incoming, now, traceparent
from schema.jobs import Job, StreamEvent, Usage, UsageData
from schema.media import media_usage
from schema.money import micros_to_credits
from schema.translate import response_usage

REQUEST_LOG = logging.getLogger("gatewayz.requests")
SCOPE_KEY = "gatewayz.exchange"  # where a handler finds its request's ``Exchange`` in the ASGI scope


def observing(tracing: Tracing | None) -> bool:
    """Whether requests are watched at all: the process traces, or logs a line per request."""
    return tracing is not None or REQUEST_LOG.isEnabledFor(logging.INFO)


class Exchange:
    __slots__ = ("_tracing", "_client", "_began", "_mark", "span", "traceparent", "path", "method", "started",
                 "job", "first", "stream_usage")

    def __init__(self, tracing: Tracing | None, scope: Scope) -> None:
        self.path: str = scope["path"]
        self.method: str = scope["method"]
        self.started = time.perf_counter()
        self.job: Job | None = None
        self.first: StreamEvent | None = None
        self.stream_usage: UsageData | None = None  # what a stream's ``end`` event reported
        self._tracing: Tracing | None = None  # set only if the request is traced (sampled)
        self.span: SpanContext | None = None  # the root span's, recorded when the request ends
        self.traceparent: str | None = None  # the parent of the job's spans at the worker and at billing
        self._client: SpanContext | None = None  # the client's span, which the trace continues
        self._began = self._mark = 0
        if tracing is not None:
            self._begin(tracing, scope)

    def _begin(self, tracing: Tracing, scope: Scope) -> None:
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
                   if name in (b"traceparent", b"tracestate")}
        self._client = incoming(headers) if headers else None
        self.span = tracing.root(f"{self.method} {self.path}", self._client)
        if self.span is not None:
            self._tracing = tracing
            self.traceparent = traceparent(self.span)
            self._began = self._mark = now()

    def restart(self) -> None:
        """The next step begins now (what came between is not a step of its own)."""
        if self._tracing is not None:
            self._mark = now()

    def step(self, name: str) -> None:
        """A span for the step that began at the last mark and ends now."""
        if self._tracing is not None:
            assert self.span is not None
            ended = now()
            self._tracing.child(name, self.span, self._mark, ended)
            self._mark = ended

    def finish(self, response: Response) -> None:
        """``response`` went out (or the client left): end the trace's root, log the line."""
        status = response.status_code
        if self._tracing is not None:
            self._traced(self._tracing, status)
        if REQUEST_LOG.isEnabledFor(logging.INFO):
            # A record made here, not by ``info``: its caller's file and line
            # (a walk up the stack) would say nothing, at a cost per request.
            REQUEST_LOG.handle(REQUEST_LOG.makeRecord(REQUEST_LOG.name, logging.INFO, __file__, 0,
                                                      self.fields(status, _cost_header(response)), (), None))

    def _traced(self, tracing: Tracing, status: int) -> None:
        assert self.span is not None
        if self.first is not None:
            self.step("relay")
        attributes: dict[str, str | int] = {"http.request.method": self.method, "url.path": self.path,
                                            "http.response.status_code": status}
        if self.job is not None:
            attributes["gatewayz.job_id"] = self.job.id
        tracing.record(f"{self.method} {self.path}", self.span, self._client, self._began, now(),
                       attributes=attributes, kind=SpanKind.SERVER, error=str(status) if status >= 500 else None)

    def fields(self, status: int, cost: str | None = None) -> dict[str, Any]:
        """The request's log line; money as credits, in a decimal string
        (``cost``: as the client was told it, if it was)."""
        job, first = self.job, self.first
        usage = self._usage()
        if cost is None and usage is not None and job is not None:
            cost = micros_to_credits(charge(usage, job.price, job.hold).cost)
        span = self.span
        return {
            "event": "request",
            "path": self.path,
            "status": status,
            "job_id": job.id if job else None,
            "trace_id": f"{span.trace_id:032x}" if span is not None else None,
            "key_id": job.key_id if job else None,
            "account_id": job.account_id if job else None,
            "model": job.model if job else None,
            "provider": first.get("provider") if first else None,
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None,
            "cost": cost,
            "queue_ms": first.get("queue_ms") if first else None,
            "latency_ms": round((time.perf_counter() - self.started) * 1000, 3),
        }

    def _usage(self) -> Usage | None:
        """What the job is charged for, as the client was told: a stream's
        ``end``, else the answer's own usage."""
        if self.stream_usage is not None:
            return Usage.model_validate(self.stream_usage)
        job, first = self.job, self.first
        if job is None or first is None or first["kind"] != "response" or not isinstance(first["data"], dict):
            return None
        if job.kind != "chat":
            return media_usage(job.kind, job.payload, first["data"])
        return response_usage(first["data"], job.dialect)


def _cost_header(response: Response) -> str | None:
    """``x-gatewayz-cost``, which a JSON answer's handler priced already."""
    for name, value in response.raw_headers:
        if name == b"x-gatewayz-cost":
            return value.decode()
    return None
