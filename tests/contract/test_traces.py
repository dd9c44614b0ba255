"""Traces across the queue, exported over OTLP/HTTP by the real SDK to a
loopback collector: one request's spans from the ingress, the worker and
billing (three processes, distributed; one, embedded) form one trace under
the ingress's span; a failover shows as two attempts; a client's
``traceparent`` is continued; and with no exporter configured, no span is
made at all."""

from __future__ import annotations

import gc
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan

from tests.support.cluster import Cluster, running_cluster
from tests.support.collector import Collector, ReceivedSpan, running_collector
from tests.support.gateway import running_gateway
from tests.support.resilience import Upstreams, resilience_config, two_upstreams

INGRESS_STEPS = {"admission", "hold", "enqueue", "relay"}

DUO_CONFIG = """
[providers.primary]
adapter = "openai"
base_url = "{primary}/v1"

[providers.backup]
adapter = "openai"
base_url = "{backup}/v1"

[models.duo]
providers = ["primary", "backup"]
input_price_per_mtok = 1.00
output_price_per_mtok = 2.00
"""


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with two_upstreams() as fakes:
        yield fakes


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, str]]:
    with running_collector() as running:
        yield running


@pytest.fixture(scope="module")
def cluster(upstreams: Upstreams, collector: tuple[Collector, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Ingress, one worker per provider and billing, each its own process,
    exporting to the collector every 100 ms."""
    config = DUO_CONFIG.format(primary=upstreams.primary_url, backup=upstreams.backup_url)
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector[1], "OTEL_BSP_SCHEDULE_DELAY": "100",
            "GATEWAYZ_UPSTREAM_RETRIES": "0"}
    with running_cluster(tmp_path_factory.mktemp("traces"), upstreams.primary_url, config=config,
                         providers=("primary", "backup"), **otel) as cluster:
        cluster.worker("worker-primary", "primary")
        cluster.worker("worker-backup", "backup")
        cluster.start("billing", "billing")
        cluster.wait_for_workers(1, provider="primary")
        cluster.wait_for_workers(1, provider="backup")
        yield cluster


def ask(url: str, key: str, message: str, *, stream: bool = False,
        headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"model": "duo", "stream": stream, "messages": [{"role": "user", "content": message}]}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30,
                          headers={"authorization": f"Bearer {key}", **(headers or {})})
    assert response.status_code == 200, response.text
    return response


def settled_trace(collector: Collector, job_id: str, *, attempts: int = 1) -> list[ReceivedSpan]:
    """The whole trace of ``job_id``'s request, once every role's spans
    arrived (each role exports on its own schedule: billing's may come first)."""
    def settled(spans: list[ReceivedSpan]) -> bool:
        roots = [span for span in spans if span.attributes.get("gatewayz.job_id") == job_id
                 and span.service.endswith("ingress") and span.name.startswith("POST ")]
        names = [span.name for span in spans if roots and span.trace_id == roots[0].trace_id]
        return "settle" in names and names.count("attempt") >= attempts and names.count("queue wait") >= attempts

    spans = collector.wait_for(settled)
    root = next(span for span in spans if span.attributes.get("gatewayz.job_id") == job_id
                and span.service.endswith("ingress") and span.name.startswith("POST "))
    return collector.of_trace(root.trace_id)


def tree(spans: list[ReceivedSpan], *, ingress: str, worker: str, billing: str,
         parent_id: str = "") -> tuple[ReceivedSpan, list[ReceivedSpan]]:
    """Checks the trace's shape: one root at the ingress (under ``parent_id``,
    a client's span), every other span its child, each made by its role.
    Returns the root and the attempts, in time order."""
    roots = [span for span in spans if span.name.startswith("POST ")]
    assert len(roots) == 1, [span.name for span in spans]
    root = roots[0]
    assert root.service == ingress
    assert root.parent_id == parent_id
    assert root.attributes["http.response.status_code"] == 200
    children = [span for span in spans if span is not root]
    assert all(span.parent_id == root.span_id for span in children), [(s.name, s.parent_id) for s in children]
    names = {span.name: span.service for span in children}
    assert set(names) >= INGRESS_STEPS
    assert all(names[step] == ingress for step in INGRESS_STEPS)
    assert names["queue wait"] == worker and names["attempt"] == worker and names["settle"] == billing
    for span in children:
        assert root.start <= span.start <= span.end
    attempts = sorted((span for span in children if span.name == "attempt"), key=lambda span: span.start)
    waits = [span for span in children if span.name == "queue wait"]
    assert len(waits) == len(attempts)
    return root, attempts


@pytest.mark.distributed
def test_one_request_is_one_trace_across_ingress_worker_and_billing(cluster: Cluster,
                                                                    collector: tuple[Collector, str]) -> None:
    response = ask(cluster.url, cluster.key, "hello trace", stream=True)
    job_id = response.headers["x-gatewayz-job-id"]

    spans = settled_trace(collector[0], job_id)

    _, attempts = tree(spans, ingress="gatewayz-ingress", worker="gatewayz-worker", billing="gatewayz-billing")
    assert [span.attributes["gatewayz.outcome"] for span in attempts] == ["answered"]
    assert attempts[0].attributes["gatewayz.provider"] == "primary"


@pytest.mark.distributed
def test_a_failover_shows_as_two_attempts_in_one_trace(cluster: Cluster, collector: tuple[Collector, str]) -> None:
    response = ask(cluster.url, cluster.key, "fail:500@primary trace me")
    assert response.headers["x-gatewayz-provider"] == "backup"

    spans = settled_trace(collector[0], response.headers["x-gatewayz-job-id"], attempts=2)

    _, attempts = tree(spans, ingress="gatewayz-ingress", worker="gatewayz-worker", billing="gatewayz-billing")
    assert [(span.attributes["gatewayz.provider"], span.attributes["gatewayz.outcome"], span.error)
            for span in attempts] == [("primary", "handed_off", True), ("backup", "answered", False)]
    assert [span.attributes["gatewayz.attempt"] for span in attempts] == [0, 1]


@pytest.mark.distributed
def test_a_clients_traceparent_is_continued(cluster: Cluster, collector: tuple[Collector, str]) -> None:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)

    response = ask(cluster.url, cluster.key, "continue my trace",
                   headers={"traceparent": f"00-{trace_id}-{span_id}-01"})

    spans = settled_trace(collector[0], response.headers["x-gatewayz-job-id"])
    assert {span.trace_id for span in spans} == {trace_id}
    tree(spans, ingress="gatewayz-ingress", worker="gatewayz-worker", billing="gatewayz-billing", parent_id=span_id)


@pytest.mark.distributed
def test_a_traceparent_that_is_not_valid_starts_a_new_trace(cluster: Cluster,
                                                           collector: tuple[Collector, str]) -> None:
    response = ask(cluster.url, cluster.key, "a broken traceparent", headers={"traceparent": "00-nothex-0-01"})

    spans = settled_trace(collector[0], response.headers["x-gatewayz-job-id"])
    tree(spans, ingress="gatewayz-ingress", worker="gatewayz-worker", billing="gatewayz-billing")


def test_embedded_every_role_records_its_spans_in_the_one_trace(upstreams: Upstreams, tmp_path: Path) -> None:
    config = resilience_config(upstreams)
    with running_collector() as (collector, endpoint), \
            running_gateway(config, tmp_path, otel_exporter_otlp_endpoint=endpoint, upstream_retries=0) as gateway:
        key = gateway.create_key("1")
        response = ask(gateway.url, key, "fail:500@primary embedded")
        spans = settled_trace(collector, response.headers["x-gatewayz-job-id"])

    # In one process, the roles share the process's tracer.
    _, attempts = tree(spans, ingress="gatewayz-ingress", worker="gatewayz-ingress", billing="gatewayz-ingress")
    assert [span.attributes["gatewayz.outcome"] for span in attempts] == ["handed_off", "answered"]


@pytest.mark.parametrize("tracing", [{}, {"otel_traces_exporter": "none"}], ids=["unset", "exporter-none"])
def test_without_an_exporter_no_span_is_made(upstreams: Upstreams, tmp_path: Path, tracing: dict[str, str]) -> None:
    with running_collector() as (collector, endpoint):
        # "none" wins over an endpoint; unset, the endpoint is not set either.
        settings = {**tracing, "otel_exporter_otlp_endpoint": endpoint} if tracing else {}
        with running_gateway(resilience_config(upstreams), tmp_path, **settings) as gateway:
            key = gateway.create_key("1")
            ask(gateway.url, key, "fail:500@primary untraced", headers={"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"})
            gateway.wait_until_settled(key)
            assert gateway.server.app.tracing is None
            gc.collect()  # what earlier tests' tracers left behind is gone
            # No span object was ever made in this process (the SDK's spans are all ``ReadableSpan``s).
            assert not [thing for thing in gc.get_objects() if isinstance(thing, ReadableSpan)]
        assert collector.exports == 0
