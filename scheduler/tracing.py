"""Traces (OpenTelemetry): the tracer each role is built with, and the W3C
``traceparent`` that carries one request's trace across the queue, in the
``Job`` and in its ``UsageEvent``.

Each role builds its own tracer provider from its settings (never the SDK's
global one: roles built side by side in one process, as ``serve`` and the
tests do, keep theirs apart), exports in batches from the SDK's thread
(``BatchSpanProcessor``), and flushes on exit. With no exporter configured
there is no provider at all: the tracer is ``None``, no span object is ever
made, and the request path pays one ``if`` for it.

Spans are started with explicit parents and times rather than through the
current context: one request's spans are made in three processes, and some
are recorded after the fact (the job's wait in its queue, by the worker that
took it; settlement, for a whole batch at once).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from schema.settings import Settings

# Stateless: the W3C format's parser and writer.
_W3C = TraceContextTextMapPropagator()


@contextmanager
def open_tracer(settings: Settings, role: str) -> Iterator[Tracer | None]:
    """The role's tracer, or None when no exporter is configured; its spans
    are flushed and its exporters closed on exit."""
    exporters = settings.span_exporters
    if not exporters:
        yield None
        return
    service = settings.otel_service_name or f"gatewayz-{role}"
    # The sampler is the SDK's, from OTEL_TRACES_SAMPLER (parent-based, always on, by default).
    provider = TracerProvider(resource=Resource.create({"service.name": service, "gatewayz.role": role}))
    for name in exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, settings)))
    try:
        yield provider.get_tracer("gatewayz")
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


def traceparent(span: Span) -> str:
    """``span`` as a W3C ``traceparent``: the parent of what another process records."""
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def parent(traceparent: str | None) -> Context | None:
    """The context a ``traceparent`` names; None if there is none or it is not valid."""
    if not traceparent:
        return None
    return incoming({"traceparent": traceparent})


def incoming(headers: Mapping[str, str]) -> Context | None:
    """The trace a client's ``traceparent`` (and ``tracestate``) header
    continues; None if it sent none, or one that is not valid."""
    if "traceparent" not in headers:
        return None
    context = _W3C.extract(headers)
    return context or None


def nanoseconds(moment: float) -> int:
    """A ``time.time()`` moment as the SDK's span times."""
    return int(moment * 1e9)


def now() -> int:
    return time.time_ns()
