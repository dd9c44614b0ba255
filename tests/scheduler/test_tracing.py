"""Pure pieces of tracing: when a process traces at all (the OTEL_*
settings), the W3C ``traceparent`` that carries a trace across the
queue, written and read back, and how recorded spans reach the exporters."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from scheduler.otlp import FinishedSpan
from scheduler.tracing import ConsoleSink, Tracing, parent, traceparent
from schema.settings import Settings

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize(("settings", "exporters"), [
    ({}, ()),
    ({"otel_exporter_otlp_endpoint": "http://collector:4318"}, ("otlp",)),
    ({"otel_exporter_otlp_traces_endpoint": "http://collector:4318/v1/traces"}, ("otlp",)),
    ({"otel_traces_exporter": "none", "otel_exporter_otlp_endpoint": "http://collector:4318"}, ()),
    ({"otel_traces_exporter": "Console, otlp"}, ("console", "otlp")),
    ({"otel_sdk_disabled": True, "otel_traces_exporter": "otlp"}, ()),
])
def test_a_process_traces_only_when_an_exporter_is_configured(settings: dict[str, object],
                                                             exporters: tuple[str, ...]) -> None:
    assert Settings.model_validate(settings).span_exporters == exporters


def test_an_unknown_exporter_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="unknown trace exporter jaeger"):
        Settings.model_validate({"otel_traces_exporter": "otlp,jaeger"})


def test_a_traceparent_round_trips() -> None:
    context = SpanContext(int(TRACE, 16), int(SPAN, 16), is_remote=False, trace_flags=TraceFlags(1))

    written = traceparent(context)

    assert written == f"00-{TRACE}-{SPAN}-01"
    read = parent(written)
    assert read is not None and (read.trace_id, read.span_id, read.trace_flags.sampled) == (context.trace_id,
                                                                                          context.span_id, True)


@pytest.mark.parametrize("value", [
    None, "", f"00-{TRACE}-{SPAN}", f"00-{'0' * 32}-{SPAN}-01", f"00-{TRACE}-{'0' * 16}-01",
    f"ff-{TRACE}-{SPAN}-01", f"00-{TRACE.upper()}-{SPAN}-01", f"00-{TRACE}-{SPAN}-01-more", "00-nothex-0-01",
])
def test_a_traceparent_that_is_not_valid_names_no_parent(value: str | None) -> None:
    assert parent(value) is None


def test_a_later_version_may_add_fields_and_keeps_its_flags_and_state() -> None:
    read = parent(f"01-{TRACE}-{SPAN}-00-more", "vendor=value")

    assert read is not None and not read.trace_flags.sampled
    assert read.trace_state.get("vendor") == "value"


class Kept:
    """A span sink that keeps what it is sent (the exporting thread's side of ``Tracing``)."""

    def __init__(self, fail_first: bool = False) -> None:
        self.batches: list[list[FinishedSpan]] = []
        self._fail = fail_first

    def export(self, spans: Sequence[FinishedSpan]) -> None:
        if self._fail:
            self._fail = False
            raise ConnectionError("collector down")
        self.batches.append(list(spans))

    def shutdown(self) -> None:
        pass


def tracing_with(**settings: object) -> Tracing:
    return Tracing(TracerProvider(), Settings.model_validate(settings))


def test_spans_are_sent_in_batches_of_at_most_the_batch_size_and_flushed_on_stop() -> None:
    tracing = tracing_with(otel_bsp_max_export_batch_size=4, otel_bsp_schedule_delay=60_000)
    kept = Kept()
    thread = tracing.exporting([kept], delay=60.0)
    root = tracing.root("POST /v1/chat/completions")
    assert root is not None

    for number in range(9):
        tracing.child(f"step {number}", root, number, number + 1)
    tracing.record("POST /v1/chat/completions", root, None, 0, 10, kind=SpanKind.SERVER)
    tracing.stop(thread)

    assert not thread.is_alive()
    assert all(len(batch) <= 4 for batch in kept.batches)
    spans = [span for batch in kept.batches for span in batch]
    assert [span.name for span in spans] == [f"step {number}" for number in range(9)] + ["POST /v1/chat/completions"]
    assert {span.parent_id for span in spans[:9]} == {root.span_id} and spans[9].parent_id == 0
    assert len({span.span_id for span in spans}) == 10


def test_a_full_queue_drops_the_oldest_and_says_so_a_failed_export_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    tracing = tracing_with(otel_bsp_max_export_batch_size=100, otel_bsp_max_queue_size=3)
    unsampled = SpanContext(int(TRACE, 16), int(SPAN, 16), is_remote=True, trace_flags=TraceFlags(0))
    sampled = SpanContext(int(TRACE, 16), int(SPAN, 16), is_remote=True, trace_flags=TraceFlags(1))
    tracing.child("not sampled", unsampled, 0, 1)
    for number in range(5):
        tracing.child(f"step {number}", sampled, number, number + 1)
    failing, kept = Kept(fail_first=True), Kept()

    tracing.stop(tracing.exporting([failing, kept], delay=60.0))

    assert [span.name for batch in kept.batches for span in batch] == ["step 2", "step 3", "step 4"]
    assert failing.batches == [] and "exporting 3 spans failed" in caplog.text
    assert "the span queue is full (OTEL_BSP_MAX_QUEUE_SIZE=3)" in caplog.text


def test_the_console_exporter_prints_the_spans_as_recorded(capfd: pytest.CaptureFixture[str]) -> None:
    tracing = tracing_with()
    client = parent(f"00-{TRACE}-{SPAN}-01", "vendor=value")
    assert client is not None
    root = tracing.root("POST /v1/chat/completions", client)
    assert root is not None
    tracing.child("attempt", root, 1, 2, attributes={"gatewayz.attempt": 1}, error="upstream said 500")
    tracing.record("POST /v1/chat/completions", root, client, 0, 3, kind=SpanKind.SERVER)

    tracing.stop(tracing.exporting([ConsoleSink(Resource.create({"service.name": "gatewayz-test"}))], delay=60.0))

    printed = [json.loads(document) for document in re.findall(r"^\{.*?^\}", capfd.readouterr().out, re.M | re.S)]
    assert [(span["name"], span["kind"], span["parent_id"]) for span in printed] == [
        ("attempt", "SpanKind.INTERNAL", f"0x{root.span_id:016x}"),
        ("POST /v1/chat/completions", "SpanKind.SERVER", f"0x{SPAN}")]
    assert {span["context"]["trace_id"] for span in printed} == {f"0x{TRACE}"}
    assert all("key=vendor, value=value" in span["context"]["trace_state"] for span in printed)
    assert printed[0]["status"] == {"status_code": "ERROR", "description": "upstream said 500"}
    assert printed[0]["attributes"] == {"gatewayz.attempt": 1}
    assert printed[1]["resource"]["attributes"]["service.name"] == "gatewayz-test"
