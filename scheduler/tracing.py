"""Traces (OpenTelemetry): what each role records its spans with
(``Tracing``), and the W3C ``traceparent`` that carries one request's trace
across the queue, in the ``Job`` and in its ``UsageEvent``.

Each role builds its own from its settings (never the SDK's global tracer
provider: roles built side by side in one process, as ``serve`` and the
tests do, keep theirs apart), exports in batches from the SDK's thread
(``BatchSpanProcessor``), and flushes on exit. With no exporter configured
there is none at all: ``Tracing`` is ``None``, no span object is ever made,
and the request path pays one ``if`` for it.

Every span is recorded once it is over, with the times it began and ended:
one request's spans are made in three processes, and some are only known
after the fact (the job's wait in its queue, by the worker that took it;
settlement, for a whole batch at once). So a span is handed to the
exporters finished (a ``ReadableSpan``), without the SDK's live ``Span``
(its locks, limits, sampler call and events list): a fifth of the CPU per
span, which keeps tracing within its budget on the request path. Only the
root of a trace consults the sampler (``OTEL_TRACES_SAMPLER``, read by the
SDK; parent-based, always on, by default); its children follow it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from opentelemetry.util.types import AttributeValue

from schema.settings import Settings

Attributes = Mapping[str, AttributeValue]

# W3C Trace Context, version 00 (a later version may add fields after these;
# ff is not a version). Parsed here rather than by the SDK's propagator,
# which costs 18 us a job on the worker and again at billing.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_SCOPE = InstrumentationScope("gatewayz")


class Tracing:
    """Records one role's spans; built by ``open_tracing``."""

    def __init__(self, provider: TracerProvider, processors: list[SpanProcessor]) -> None:
        self._sampler = provider.sampler
        self._ids = provider.id_generator
        self._resource = provider.resource
        self._processors = processors

    def root(self, name: str, parent: SpanContext | None = None) -> SpanContext | None:
        """The context of a new trace's root span (under ``parent``, a
        client's span), or None if the sampler leaves the request out."""
        trace_id = parent.trace_id if parent is not None else self._ids.generate_trace_id()
        context = set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None
        sampled = self._sampler.should_sample(context, trace_id, name, SpanKind.SERVER)
        if sampled.decision != Decision.RECORD_AND_SAMPLE:
            return None
        return SpanContext(trace_id, self._ids.generate_span_id(), False, TraceFlags(TraceFlags.SAMPLED),
                           sampled.trace_state)

    def record(self, name: str, context: SpanContext, parent: SpanContext | None, start: int, end: int, *,
               attributes: Attributes | None = None, kind: SpanKind = SpanKind.INTERNAL,
               error: str | None = None) -> None:
        """Hands the finished span ``context`` (times in ns) to the exporters."""
        span = ReadableSpan(name, context, parent, self._resource, attributes, kind=kind,
                            status=Status(StatusCode.ERROR, error) if error is not None else Status(StatusCode.UNSET),
                            start_time=start, end_time=end, instrumentation_scope=_SCOPE)
        for processor in self._processors:
            processor.on_end(span)

    def child(self, name: str, parent: SpanContext, start: int, end: int, *,
              attributes: Attributes | None = None, error: str | None = None) -> None:
        """Records a finished span under ``parent`` (in its trace, sampled as it is)."""
        context = SpanContext(parent.trace_id, self._ids.generate_span_id(), False, parent.trace_flags,
                              parent.trace_state)
        self.record(name, context, parent, start, end, attributes=attributes, error=error)


@contextmanager
def open_tracing(settings: Settings, role: str) -> Iterator[Tracing | None]:
    """The role's ``Tracing``, or None when no exporter is configured; its
    spans are flushed and its exporters closed on exit."""
    exporters = settings.span_exporters
    if not exporters:
        yield None
        return
    service = settings.otel_service_name or f"gatewayz-{role}"
    provider = TracerProvider(resource=Resource.create({"service.name": service, "gatewayz.role": role}))
    processors: list[SpanProcessor] = []
    for name in exporters:
        processor = BatchSpanProcessor(_exporter(name, settings))
        provider.add_span_processor(processor)  # so that the provider's shutdown flushes it
        processors.append(processor)
    try:
        yield Tracing(provider, processors)
    finally:
        provider.shutdown()


def _exporter(name: str, settings: Settings) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    # Imported only when used: it brings protobuf and requests along.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = settings.otel_exporter_otlp_traces_endpoint
    if endpoint is None and settings.otel_exporter_otlp_endpoint is not None:
        endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"  # as the OTLP spec joins them
    # Headers, certificates, compression and timeouts: the exporter reads OTEL_EXPORTER_OTLP_* itself.
    return OTLPSpanExporter(endpoint=endpoint)


def traceparent(context: SpanContext) -> str:
    """``context`` as a W3C ``traceparent``: the parent of what another process records."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def parent(traceparent: str | None, tracestate: str | None = None) -> SpanContext | None:
    """The span a ``traceparent`` names; None if there is none or it is not valid."""
    if not traceparent or (match := _TRACEPARENT.fullmatch(traceparent.strip())) is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or not int(trace_id, 16) or not int(span_id, 16):
        return None
    state = TraceState.from_header([tracestate]) if tracestate else None
    return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True,
                       trace_flags=TraceFlags(int(flags, 16) & TraceFlags.SAMPLED), trace_state=state)


def incoming(headers: Mapping[str, str]) -> SpanContext | None:
    """The span a client's ``traceparent`` (and ``tracestate``) header
    names, which its request's trace continues; None if it sent none, or
    one that is not valid."""
    return parent(headers.get("traceparent"), headers.get("tracestate"))


def nanoseconds(moment: float) -> int:
    """A ``time.time()`` moment as the SDK's span times."""
    return int(moment * 1e9)


def now() -> int:
    return time.time_ns()
