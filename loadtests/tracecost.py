"""What tracing costs one request, in CPU, without the noise of a whole
benchmark: the calls the gateway makes for one request's eight spans
(``Tracing.root``, the ``traceparent`` written once and read back by the
worker and billing, seven children, the root), repeated, with the export
thread encoding and posting them to a loopback OTLP sink, in one process.

    python -m loadtests.tracecost [--requests 20000]

Prints the process's CPU per request to record them (the export thread
waiting), then to export them (its thread alone: encoding and posting, in
batches of the default size). The figures are a floor for the gateway's:
the real request path also builds its ``Exchange``, and the export thread
then contends with the event loop for the GIL.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from loadtests import targets
from scheduler.tracing import OtlpSink, Tracing, now, parent, traceparent
from schema.settings import Settings

JOB = "01JF3Q8ZK2V7M5N9P4R6T8W0XY"


def one_request(tracing: Tracing) -> None:
    """The spans of one request, as the ingress, the worker and billing record them."""
    root = tracing.root("POST /v1/chat/completions")
    assert root is not None
    written = traceparent(root)
    began = mark = now()
    for step in ("admission", "hold", "enqueue"):
        ended = now()
        tracing.child(step, root, mark, ended)
        mark = ended
    at_worker = parent(written)
    assert at_worker is not None
    where = {"gatewayz.job_id": JOB, "gatewayz.provider": "fake", "gatewayz.attempt": 0}
    taken = now()
    tracing.child("queue wait", at_worker, mark, taken, attributes=where)
    tracing.child("attempt", at_worker, taken, now(), attributes={
        **where, "gatewayz.upstream_model": "fake-small", "gatewayz.outcome": "answered"})
    at_billing = parent(written)
    assert at_billing is not None
    tracing.child("settle", at_billing, taken, now(), attributes={
        "gatewayz.job_id": JOB, "gatewayz.batch_size": 32, "gatewayz.duplicate": False})
    tracing.child("relay", root, mark, now())
    tracing.record("POST /v1/chat/completions", root, None, began, now(), kind=SpanKind.SERVER, attributes={
        "http.request.method": "POST", "url.path": "/v1/chat/completions", "http.response.status_code": 200,
        "gatewayz.job_id": JOB})


def per_request_us(spent_s: float, requests: int) -> float:
    return round(spent_s / requests * 1e6, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU per request of tracing, in one process.")
    parser.add_argument("--requests", type=int, default=20_000)
    requests = parser.parse_args().requests
    with tempfile.TemporaryDirectory(prefix="gatewayz-tracecost-") as logs, targets.otlp_sink(Path(logs)) as sink:
        # A queue that holds the whole run: nothing is dropped, every span is encoded and posted.
        settings = Settings.model_validate({"otel_bsp_max_queue_size": requests * 8 + 1})
        resource = Resource.create({"service.name": "gatewayz-ingress"})
        tracing = Tracing(TracerProvider(resource=resource), settings)
        exporter = OtlpSink(f"http://127.0.0.1:{sink.port}/v1/traces", resource)
        for _ in range(1000):  # warm up: caches, the connection to the sink
            one_request(tracing)
        tracing.stop(tracing.exporting([exporter], delay=60.0))
        began = time.process_time()
        for _ in range(requests):
            one_request(tracing)
        recorded = time.process_time()
        # The export thread alone now: the spans in batches of OTEL_BSP_MAX_EXPORT_BATCH_SIZE, encoded and posted.
        tracing.stop(tracing.exporting([exporter], delay=60.0))
        exported = time.process_time()
        exporter.shutdown()
        received = targets.sink_stats(sink)["spans"]
    print(f"{requests} requests, eight spans each (the sink received {received} spans, warm-up included):")
    print(f"  recording: {per_request_us(recorded - began, requests)} us of CPU a request")
    print(f"  exporting (encoding and posting): {per_request_us(exported - recorded, requests)} us")
    print(f"  together: {per_request_us(exported - began, requests)} us")


if __name__ == "__main__":
    main()
