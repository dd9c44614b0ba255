"""The hand-written OTLP encoding (``scheduler/otlp.py``), read back by
``opentelemetry-proto``'s own decoder: every field a collector sees is the
one recorded."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from scheduler.otlp import KIND_INTERNAL, KIND_SERVER, Encoder, FinishedSpan

TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
ROOT = 0x00F067AA0BA902B7
CHILD = 0xFFFFFFFFFFFFFFFF


def values(attributes: list[KeyValue]) -> dict[str, object]:
    def value(any_value: AnyValue) -> object:
        kind = any_value.WhichOneof("value")
        return getattr(any_value, kind) if kind is not None else None

    return {item.key: value(item.value) for item in attributes}


def decoded(spans: list[FinishedSpan]) -> tuple[ExportTraceServiceRequest, list[Span]]:
    encoder = Encoder({"service.name": "gatewayz-ingress", "gatewayz.role": "ingress"}, "gatewayz")
    request = ExportTraceServiceRequest.FromString(encoder.request(spans))
    assert len(request.resource_spans) == 1 and len(request.resource_spans[0].scope_spans) == 1
    return request, list(request.resource_spans[0].scope_spans[0].spans)


def test_a_root_and_a_failed_child_read_back_as_recorded() -> None:
    root = FinishedSpan("POST /v1/chat/completions", TRACE, ROOT, 0, "vendor=value,other=1", KIND_SERVER,
                        1_700_000_000_123_456_789, 1_700_000_000_223_456_789,
                        {"http.response.status_code": 200, "gatewayz.job_id": "job-é", "gatewayz.duplicate": True,
                         "ratio": 0.25, "negative": -3, "off": False, "long": "y" * 300}, None)
    child = FinishedSpan("attempt", TRACE, CHILD, ROOT, "", KIND_INTERNAL, 2**64 - 1, 2**64 - 1,
                         {"gatewayz.outcome": "handed_off"}, "upstream said 500 " + "x" * 300)

    request, spans = decoded([root, child])

    resource = request.resource_spans[0].resource
    assert values(list(resource.attributes)) == {"service.name": "gatewayz-ingress", "gatewayz.role": "ingress"}
    assert request.resource_spans[0].scope_spans[0].scope.name == "gatewayz"
    first, second = spans
    assert (first.trace_id.hex(), first.span_id.hex(), first.parent_span_id) == (f"{TRACE:032x}", f"{ROOT:016x}", b"")
    assert first.trace_state == "vendor=value,other=1"
    assert (first.name, first.kind) == ("POST /v1/chat/completions", Span.SPAN_KIND_SERVER)
    assert (first.start_time_unix_nano, first.end_time_unix_nano) == (root.start, root.end)
    assert values(list(first.attributes)) == {"http.response.status_code": 200, "gatewayz.job_id": "job-é",
                                              "gatewayz.duplicate": True, "ratio": 0.25, "negative": -3,
                                              "off": False, "long": "y" * 300}
    assert first.status.code == Status.STATUS_CODE_UNSET
    assert (second.trace_id, second.parent_span_id.hex(), second.span_id.hex()) == (first.trace_id, f"{ROOT:016x}",
                                                                                    "f" * 16)
    assert (second.name, second.kind, second.trace_state) == ("attempt", Span.SPAN_KIND_INTERNAL, "")
    assert second.start_time_unix_nano == second.end_time_unix_nano == 2**64 - 1
    assert values(list(second.attributes)) == {"gatewayz.outcome": "handed_off"}
    assert (second.status.code, second.status.message) == (Status.STATUS_CODE_ERROR, child.error)


def test_names_and_attributes_beyond_what_the_encoder_keeps_encode_alike() -> None:
    spans = [FinishedSpan(f"GET /{number}", TRACE, number + 1, ROOT, "", KIND_INTERNAL, number, number + 1,
                          {"gatewayz.job_id": f"job-{number}", "gatewayz.provider": "fake"} if number % 2 else None,
                          None) for number in range(1500)]  # more names and pairs than the encoder keeps encoded

    _, read = decoded(spans * 2)

    assert [span.name for span in read] == [f"GET /{number}" for number in range(1500)] * 2
    assert [span.span_id for span in read] == [(number + 1).to_bytes(8, "big") for number in range(1500)] * 2
    assert [values(list(span.attributes)) for span in read] == [
        {"gatewayz.job_id": f"job-{number}", "gatewayz.provider": "fake"} if number % 2 else {}
        for number in range(1500)] * 2


def test_a_list_value_is_written_as_its_text() -> None:
    span = FinishedSpan("x", TRACE, ROOT, 0, "", KIND_INTERNAL, 1, 2, {"tags": ["a", "b"]}, None)

    _, read = decoded([span, span])

    assert [values(list(one.attributes)) for one in read] == [{"tags": "['a', 'b']"}] * 2


def test_an_empty_batch_is_a_valid_request() -> None:
    _, spans = decoded([])

    assert spans == []
