"""Pure pieces of tracing: when a process traces at all (the OTEL_*
settings), and the W3C ``traceparent`` that carries a trace across the
queue, written and read back."""

from __future__ import annotations

import pytest
from opentelemetry.trace import SpanContext, TraceFlags

from scheduler.tracing import parent, traceparent
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
