"""``GET /metrics`` in both run modes, all roles in one process: what an
operator reads after real requests (JSON, a stream, a failing upstream, a
failover, refusals with 402, 429 and 503): counts by status, tokens and
cost as settled, queue wait and time to first token observed, circuit
state, pool gauges; and that requests from many keys and for unknown
models add no series.

Each test reads the counters before and after what it does: the module's
gateway is shared, and its registry is its own (another gateway in this
process never adds to it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schema.catalog import GatewayConfig, parse_config
from tests.conftest import MODES
from tests.support.gateway import ADMIN_TOKEN, Gateway, gateway_in_mode
from tests.support.resilience import PRICES, Upstreams, cost_of_echo, two_upstreams

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
CHAT = "/v1/chat/completions"


def metrics_config(upstreams: Upstreams) -> GatewayConfig:
    """``duo``: primary then backup; ``solo``: primary only; the ``tight``
    plan allows one request a minute."""
    document = {
        "providers": {
            "primary": {"adapter": "openai", "base_url": f"{upstreams.primary_url}/v1"},
            "backup": {"adapter": "openai", "base_url": f"{upstreams.backup_url}/v1"},
        },
        "models": {
            "duo": {"providers": ["primary", "backup"], **PRICES},
            "solo": {"providers": ["primary"], **PRICES},
        },
        "plans": {"tight": {"requests_per_minute": 1}},
    }
    return parse_config(document, {})


@pytest.fixture(scope="module", params=MODES)
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """In front of two fake upstreams of its own; circuits open after 2
    consecutive failures, and stay open for a minute; no retries."""
    with (two_upstreams() as upstreams,
          gateway_in_mode(request.param, metrics_config(upstreams), tmp_path_factory.mktemp("metrics"),
                          admin_token=ADMIN_TOKEN, breaker_failures=2, breaker_reset_timeout=60,
                          upstream_retries=0) as gateway):
        yield gateway


@pytest.fixture(autouse=True)
def closed_circuits(gateway: Gateway) -> None:
    for provider in ("primary", "backup"):
        response = httpx.post(f"{gateway.url}/admin/providers/{provider}/reset",
                              headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert response.status_code == 200


def scrape(gateway: Gateway) -> Samples:
    response = httpx.get(f"{gateway.url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grown(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def eventually(gateway: Gateway, check: Callable[[Samples], bool], timeout: float = 10.0) -> Samples:
    """Scrape until ``check`` holds (settlement is asynchronous); the last scrape."""
    deadline = time.monotonic() + timeout
    while not check(samples := scrape(gateway)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return samples


def chat(gateway: Gateway, key: str, message: str, *, model: str = "duo", stream: bool = False) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [{"role": "user", "content": message}], "stream": stream})


def test_answered_requests_are_counted_with_their_tokens_cost_and_waits(gateway: Gateway) -> None:
    key = gateway.create_key("10")
    message = "count these four"
    before = scrape(gateway)
    answered = chat(gateway, key, message)
    streamed = chat(gateway, key, message, stream=True)
    assert answered.status_code == streamed.status_code == 200
    assert "data: [DONE]" in streamed.text
    priority = answered.headers["x-gatewayz-priority"]
    assert answered.headers["x-gatewayz-provider"] == "primary"

    tokens = ("gatewayz_tokens_total", {"direction": "output", "provider": "primary", "model": "duo"})
    after = eventually(gateway, lambda now: grown(before, now, tokens[0], **tokens[1]) >= 2 * 4)
    labels = {"route": CHAT, "model": "duo", "provider": "primary", "status": "200", "priority": priority}
    assert grown(before, after, "gatewayz_requests_total", **labels) == 2
    assert grown(before, after, "gatewayz_request_duration_seconds_count", route=CHAT, priority=priority) == 2
    # Only the stream has a first token apart from its answer.
    assert grown(before, after, "gatewayz_time_to_first_token_seconds_count", route=CHAT, priority=priority) == 1
    assert grown(before, after, "gatewayz_queue_wait_seconds_count", pool="primary", priority=priority) == 2
    # The fake counts a token a word; its reply is "Echo:" and the message.
    assert grown(before, after, "gatewayz_tokens_total", direction="input", provider="primary", model="duo") == 2 * 3
    assert grown(before, after, *tokens[:1], **tokens[1]) == 2 * 4
    cost = grown(before, after, "gatewayz_cost_credits_total", provider="primary", model="duo")
    assert Decimal(str(round(cost, 6))) == Decimal(2 * cost_of_echo(message)) / 1_000_000
    assert grown(before, after, "gatewayz_settlement_lag_seconds_count") >= 1
    assert grown(before, after, "gatewayz_billing_batch_size_count") >= 1


def test_a_failing_upstream_counts_its_errors_the_failover_and_the_open_circuit(gateway: Gateway) -> None:
    key = gateway.create_key("10")
    before = scrape(gateway)
    # On duo the primary fails and the job goes to backup; on solo it has nowhere to go.
    failed_over = chat(gateway, key, "fail:500@primary over")
    assert failed_over.status_code == 200 and failed_over.headers["x-gatewayz-provider"] == "backup"
    assert chat(gateway, key, "fail:500@primary alone", model="solo").status_code == 502
    assert chat(gateway, key, "fail:500@primary again", model="solo").status_code == 502
    refused = chat(gateway, key, "after the circuit opened", model="solo")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "circuit_open"

    after = scrape(gateway)
    priority = failed_over.headers["x-gatewayz-priority"]
    assert grown(before, after, "gatewayz_upstream_errors_total", provider="primary", kind="error") == 3
    assert grown(before, after, "gatewayz_failovers_total", from_provider="primary", to_provider="backup") == 1
    assert grown(before, after, "gatewayz_requests_total", route=CHAT, model="duo", provider="backup", status="200",
                 priority=priority) == 1
    assert grown(before, after, "gatewayz_requests_total", route=CHAT, model="solo", provider="primary",
                 status="502", priority=priority) == 2
    # Refused before any worker answered: no provider.
    assert grown(before, after, "gatewayz_requests_total", route=CHAT, model="solo", provider="", status="503",
                 priority=priority) == 1
    assert grown(before, after, "gatewayz_admission_refusals_total", pool="primary", reason="circuit_open") == 1
    assert value(after, "gatewayz_circuit_state", provider="primary", model="solo") == 2  # open
    assert value(after, "gatewayz_circuit_state", provider="primary", model="duo") == 0
    assert value(after, "gatewayz_circuit_state", provider="primary", model="") == 0


def test_refusals_are_counted_by_status_and_rate_limit_scope(gateway: Gateway) -> None:
    broke = gateway.create_key("0")
    tight = gateway.create_key("10", plan="tight")
    before = scrape(gateway)
    assert chat(gateway, broke, "no credits").status_code == 402
    first = chat(gateway, tight, "first")
    assert first.status_code == 200
    assert chat(gateway, tight, "second").status_code == 429
    assert chat(gateway, tight, "no such model", model="no-such-model").status_code == 404
    after = scrape(gateway)
    assert grown(before, after, "gatewayz_rate_limit_refusals_total", scope="key") == 1
    priority = first.headers["x-gatewayz-priority"]
    assert grown(before, after, "gatewayz_requests_total", route=CHAT, model="duo", provider="", status="429",
                 priority=priority) == 1
    assert sum(grown(before, after, name, **dict(labels)) for name, labels in after
               if name == "gatewayz_requests_total" and dict(labels)["status"] == "402") == 1
    # A model the catalog does not have is never a label: refused before routing, counted unlabelled.
    assert grown(before, after, "gatewayz_requests_total", route=CHAT, model="", provider="", status="404",
                 priority="") == 1
    assert not any("no-such-model" in str(labels) for _, labels in after)


def test_many_keys_and_jobs_add_no_series(gateway: Gateway) -> None:
    chat(gateway, gateway.create_key("10"), "warm up")  # the series this shape of request uses
    before = scrape(gateway)
    for n in range(5):
        assert chat(gateway, gateway.create_key("10"), f"key {n}").status_code == 200
        assert chat(gateway, f"sk-not-a-key-{n}", "who").status_code == 401
        assert chat(gateway, gateway.create_key("10"), "m", model=f"made-up-{n}").status_code == 404
    after = eventually(gateway, lambda now: grown(before, now, "gatewayz_billing_batch_size_count") >= 1)
    series = {name for name, _ in after}
    grown_series = {(name, labels) for name, labels in after if (name, labels) not in before}
    # Only series of the unauthenticated 401s and the 404s, one each, are new: no job or key made one.
    assert {dict(labels)["status"] for name, labels in grown_series if name == "gatewayz_requests_total"} <= {"401",
                                                                                                          "404"}
    assert len([1 for name, _ in grown_series if name == "gatewayz_requests_total"]) <= 2
    assert "gatewayz_requests_total" in series


def test_the_pool_and_hold_gauges_are_read_at_scrape_time(gateway: Gateway) -> None:
    key = gateway.create_key("10")
    assert chat(gateway, key, "settle me").status_code == 200
    gateway.wait_until_settled(key)
    samples = scrape(gateway)
    for pool in ("primary", "backup"):
        for priority in ("realtime", "standard", "bulk", "batch"):
            assert (("gatewayz_queue_depth", frozenset({"pool": pool, "priority": priority}.items())) in samples)
        assert value(samples, "gatewayz_pool_consumers", pool=pool) >= 1
        assert ("gatewayz_jobs_in_flight", frozenset({"pool": pool}.items())) in samples
        assert ("gatewayz_pool_service_rate", frozenset({"pool": pool}.items())) in samples
    assert ("gatewayz_holds_outstanding", frozenset()) in samples
    assert ("gatewayz_credits_held", frozenset()) in samples


def test_a_metrics_token_guards_the_endpoint(tmp_path: Path) -> None:
    with (two_upstreams() as upstreams,
          gateway_in_mode("embedded", metrics_config(upstreams), tmp_path, metrics_token="scrape-secret") as gateway):
        for headers in ({}, {"authorization": "Bearer wrong"}):
            refused = httpx.get(f"{gateway.url}/metrics", headers=headers)
            assert refused.status_code == 401
            assert refused.json()["error"]["type"] == "authentication_error"
        allowed = httpx.get(f"{gateway.url}/metrics", headers={"authorization": "Bearer scrape-secret"})
        assert allowed.status_code == 200 and "gatewayz_queue_depth" in allowed.text


def test_a_request_in_flight_shows_as_an_open_hold(gateway: Gateway) -> None:
    key = gateway.create_key("10")
    before = scrape(gateway)
    with ThreadPoolExecutor(1) as pool:
        # The fake streams one word each 50 ms: about two seconds in flight.
        slow = pool.submit(chat, gateway, key, "slow " + " ".join(["word"] * 40), stream=True)
        during = eventually(gateway, lambda now: grown(before, now, "gatewayz_holds_outstanding") >= 1)
        assert grown(before, during, "gatewayz_holds_outstanding") >= 1
        assert grown(before, during, "gatewayz_credits_held") > 0
        assert slow.result().status_code == 200
    gateway.wait_until_settled(key)
    after = eventually(gateway, lambda now: value(now, "gatewayz_holds_outstanding")
                       <= value(before, "gatewayz_holds_outstanding"))
    assert value(after, "gatewayz_holds_outstanding") == value(before, "gatewayz_holds_outstanding")
    assert value(after, "gatewayz_credits_held") == value(before, "gatewayz_credits_held")
