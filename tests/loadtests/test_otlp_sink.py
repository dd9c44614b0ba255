"""The benchmark's OTLP sink counts the spans of an export without decoding
them: checked against requests built with ``opentelemetry-proto`` itself
(several resources and scopes, events and attributes to skip) and against
the gateway's own encoding."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from loadtests.otlp_sink import count_spans
from scheduler.otlp import KIND_INTERNAL, Encoder, FinishedSpan


def span(number: int) -> Span:
    return Span(trace_id=bytes(range(16)), span_id=number.to_bytes(8, "big"), name=f"span {number}",
                kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=2**63, end_time_unix_nano=2**64 - 1,
                attributes=[KeyValue(key="n", value=AnyValue(int_value=-number)),
                            KeyValue(key="r", value=AnyValue(double_value=0.5))],
                events=[Span.Event(time_unix_nano=5, name="event")], status=Status(code=Status.STATUS_CODE_ERROR),
                flags=0x301)


def test_spans_are_counted_across_resources_and_scopes() -> None:
    request = ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="a"))]),
                      scope_spans=[ScopeSpans(scope=InstrumentationScope(name="one"), spans=[span(1), span(2)]),
                                   ScopeSpans(scope=InstrumentationScope(name="two"), spans=[span(3)])],
                      schema_url="https://example.com/schema"),
        ResourceSpans(scope_spans=[ScopeSpans(spans=[span(number) for number in range(4, 304)])]),
        ResourceSpans(),
    ])

    assert count_spans(request.SerializeToString()) == 303
    assert count_spans(b"") == 0


def test_the_gateways_own_exports_are_counted() -> None:
    spans = [FinishedSpan("hold", 1, number + 1, 7, "", KIND_INTERNAL, 1, 2, {"gatewayz.attempt": number}, None)
             for number in range(130)]

    assert count_spans(Encoder({"service.name": "gatewayz-worker"}, "gatewayz").request(spans)) == 130
