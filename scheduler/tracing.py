"""Traces (OpenTelemetry): what each role records its spans with
(``Tracing``), and the W3C ``traceparent`` that carries one request's trace
across the queue, in the ``Job`` and in its ``UsageEvent``.

Each role builds its own from its settings (never the SDK's global tracer
provider: roles built side by side in one process, as ``serve`` and the
tests do, keep theirs apart), exports in batches from a thread of its own,
and flushes on exit. With no exporter configured there is none at all:
``Tracing`` is ``None``, no span object is ever made, and the request path
pays one ``if`` for it.

Every span is recorded once it is over, with the times it began and ended:
one request's spans are made in three processes, and some are only known
after the fact (the job's wait in its queue, by the worker that took it;
settlement, for a whole batch at once). So a span is a ``FinishedSpan``
tuple appended to a queue (about a microsecond), with no SDK span object,
lock or processor call on the request path; the exporting thread encodes
each batch itself (``scheduler/otlp.py``, a tenth of the SDK encoder's
CPU) and sends it through the SDK's OTLP/HTTP client (its headers,
compression, certificates, timeout and retries, from the OTEL_EXPORTER_OTLP_*
variables). Only the root of a trace consults the sampler
(``OTEL_TRACES_SAMPLER``, read by the SDK; parent-based, always on, by
default); its children follow it.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    DEFAULT_TRACE_STATE,
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

from scheduler.otlp import KIND_INTERNAL, Encoder, FinishedSpan
from schema.settings import Settings

Attributes = Mapping[str, AttributeValue]

# W3C Trace Context, version 00 (a later version may add fields after these;
# ff is not a version). Parsed here rather than by the SDK's propagator,
# which costs 18 us a job on the worker and again at billing.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_SCOPE = "gatewayz"
_LOG = logging.getLogger(__name__)


class SpanSink(Protocol):
    """Where one exporting thread's batches go."""

    def export(self, spans: Sequence[FinishedSpan]) -> None: ...

    def shutdown(self) -> None: ...


class Tracing:
    """Records one role's spans; built by ``open_tracing``."""

    def __init__(self, provider: TracerProvider, settings: Settings) -> None:
        self._sampler = provider.sampler
        self._ids = provider.id_generator
        self._span_id = provider.id_generator.generate_span_id
        self._batch = min(settings.otel_bsp_max_export_batch_size, settings.otel_bsp_max_queue_size)
        # Full, it drops the oldest span: a collector that cannot keep up costs spans, never memory or latency.
        self._queue: deque[FinishedSpan] = deque(maxlen=settings.otel_bsp_max_queue_size)
        self._wake = threading.Event()
        self._stopping = False
        self._full = False  # set when the queue filled up, so that the export thread says so

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
        """Queues the finished span ``context`` (times in ns) for export."""
        self._add(FinishedSpan(name, context.trace_id, context.span_id, parent.span_id if parent is not None else 0,
                               _state(context), kind.value + 1, start, end, attributes, error))

    def child(self, name: str, parent: SpanContext, start: int, end: int, *,
              attributes: Attributes | None = None, error: str | None = None) -> None:
        """Records a finished span under ``parent`` (in its trace, sampled as it is)."""
        # The most frequent call of all (seven of a request's eight spans), so written out in full.
        if parent.trace_flags & TraceFlags.SAMPLED:
            queue = self._queue
            queue.append(FinishedSpan(name, parent.trace_id, self._span_id(), parent.span_id, _state(parent),
                                      KIND_INTERNAL, start, end, attributes, error))
            if len(queue) >= self._batch:
                self._ready()

    def _add(self, span: FinishedSpan) -> None:
        queue = self._queue
        queue.append(span)
        if len(queue) >= self._batch:
            self._ready()

    def _ready(self) -> None:
        """A batch is ready: wake the export thread. Only on the append that
        fills a batch (or the queue) is it checked whether the queue is full."""
        if len(self._queue) == self._queue.maxlen:
            self._full = True
        self._wake.set()

    def exporting(self, sinks: Sequence[SpanSink], delay: float) -> threading.Thread:
        """The thread that sends what is queued to ``sinks`` every ``delay``
        seconds, or as soon as a batch is full; it sends the rest and ends
        once ``stop`` is called."""
        def run() -> None:
            while True:
                self._wake.wait(delay)
                self._wake.clear()
                if self._full:
                    self._full = False
                    _LOG.warning("the span queue is full (OTEL_BSP_MAX_QUEUE_SIZE=%d): the oldest spans are "
                                 "dropped until the collector keeps up", self._queue.maxlen)
                while self._queue:
                    batch = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
                    for sink in sinks:
                        _send(sink, batch)
                if self._stopping:
                    return

        thread = threading.Thread(target=run, name="gatewayz-span-export", daemon=True)
        thread.start()
        return thread

    def stop(self, thread: threading.Thread) -> None:
        self._stopping = True
        self._wake.set()
        thread.join()


def _state(context: SpanContext) -> str:
    # A context made without one holds this very object: the usual case, told apart without a call.
    state = context.trace_state
    return "" if state is DEFAULT_TRACE_STATE or not state else state.to_header()


def _send(sink: SpanSink, batch: Sequence[FinishedSpan]) -> None:
    try:
        sink.export(batch)
    except Exception:  # an exporter's failure is logged, never allowed to end the thread (or the process's spans)
        _LOG.exception("exporting %d spans failed", len(batch))


class OtlpSink:
    """OTLP/HTTP (protobuf): our encoding, the SDK's HTTP client."""

    def __init__(self, endpoint: str | None, resource: Resource) -> None:
        # Imported only when used: it brings protobuf and requests along.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        self._exporter = OTLPSpanExporter(endpoint=endpoint)
        # Its client (``_client``, not public API) is what posts a body with
        # the configured headers, compression, certificates, timeout and
        # retries; its ``export`` would re-encode our spans the slow way.
        self._client: Any = self._exporter._client
        self._encoder = Encoder(resource.attributes, _SCOPE)

    def export(self, spans: Sequence[FinishedSpan]) -> None:
        result = self._client.export(self._encoder.request(spans))
        if not result.success:
            _LOG.warning("the OTLP collector refused %d spans: %s", len(spans), result.error)

    def shutdown(self) -> None:
        self._exporter.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated


class ConsoleSink:
    """The SDK's console exporter (for a look at the spans, not for speed)."""

    def __init__(self, resource: Resource) -> None:
        self._exporter = ConsoleSpanExporter(out=sys.stdout)  # the stream of now: its default is the one at import
        self._resource = resource

    def export(self, spans: Sequence[FinishedSpan]) -> None:
        self._exporter.export([self._readable(span) for span in spans])

    def _readable(self, span: FinishedSpan) -> ReadableSpan:
        flags = TraceFlags(TraceFlags.SAMPLED)
        state = TraceState.from_header([span.trace_state]) if span.trace_state else None
        parent = SpanContext(span.trace_id, span.parent_id, False, flags) if span.parent_id else None
        status = Status(StatusCode.ERROR, span.error) if span.error is not None else Status(StatusCode.UNSET)
        return ReadableSpan(span.name, SpanContext(span.trace_id, span.span_id, False, flags, state), parent,
                            self._resource, span.attributes, kind=SpanKind(span.kind - 1), status=status,
                            start_time=span.start, end_time=span.end,
                            instrumentation_scope=InstrumentationScope(_SCOPE))

    def shutdown(self) -> None:
        self._exporter.shutdown()


@contextmanager
def open_tracing(settings: Settings, role: str) -> Iterator[Tracing | None]:
    """The role's ``Tracing``, or None when no exporter is configured; its
    spans are flushed and its exporters closed on exit."""
    exporters = settings.span_exporters
    if not exporters:
        yield None
        return
    service = settings.otel_service_name or f"gatewayz-{role}"
    resource = Resource.create({"service.name": service, "gatewayz.role": role})
    sinks = [_sink(name, settings, resource) for name in exporters]
    tracing = Tracing(TracerProvider(resource=resource), settings)
    thread = tracing.exporting(sinks, settings.otel_bsp_schedule_delay / 1000)
    try:
        yield tracing
    finally:
        tracing.stop(thread)
        for sink in sinks:
            sink.shutdown()


def _sink(name: str, settings: Settings, resource: Resource) -> SpanSink:
    if name == "console":
        return ConsoleSink(resource)
    endpoint = settings.otel_exporter_otlp_traces_endpoint
    if endpoint is None and settings.otel_exporter_otlp_endpoint is not None:
        endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"  # as the OTLP spec joins them
    return OtlpSink(endpoint, resource)


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
