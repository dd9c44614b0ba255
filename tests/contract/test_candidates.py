"""Where a job starts, in both modes: the ingress walks a model's
candidates in order, passes over one whose circuit is open (its upstream
and its workers never see the job) and one whose pool refuses it, and
starts the job at the first that admits it; the answer names that
provider and is charged once at the model's price. When every candidate
refuses, the client gets the refusal with the shortest ``retry-after``.
An error after the job was queued names the job (``x-gatewayz-job-id``),
even the ingress's own timeout before any event came.

``busy`` and ``crowded`` are pools of one that a test holds through the
gated upstream (a test each, so that each is estimated from no service
history: 1 s a job), ``spare`` an idle pool of one; ``tripped`` and
``tripped2`` share an upstream that fails on command
(``fail:500@tripped``), and their circuits open after 2 failures. Every
model routes to the same upstream model id (``echo``), so a model's
failures open the circuit every model of that provider meets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from ingress.runtime import Runtime
from loadtests.fake_upstream import FakeUpstream
from schema.catalog import GatewayConfig, parse_config
from tests.conftest import MODES
from tests.contract.test_priorities import GatedUpstream, gated  # noqa: F401 (fixture)
from tests.contract.test_queue_admission import release, saturate
from tests.support.gateway import ADMIN_TOKEN, Gateway, gateway_in_mode
from tests.support.resilience import cost_of_echo, echoed, named_upstream, usage_rows

PRICE = {"input_price_per_mtok": Decimal("1.00"), "output_price_per_mtok": Decimal("2.00")}
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
RESET_TIMEOUT = 60.0  # circuits stay open for the whole of a test (each test starts with them closed)
MODELS = {
    "busy-model": ["busy"],
    "busy-spare": ["busy", "spare"],
    "tripped-spare": ["tripped", "spare"],
    "tripped2-spare": ["tripped2", "spare"],
    "crowded-model": ["crowded"],
    "tripped-crowded": ["tripped", "crowded"],
    "both-tripped": ["tripped", "tripped2"],
}


def config(gated_url: str, spare_url: str, tripped_url: str) -> GatewayConfig:
    urls = {"busy": gated_url, "crowded": gated_url, "spare": spare_url,
            "tripped": tripped_url, "tripped2": tripped_url}
    return parse_config({
        "providers": {name: {"adapter": "openai", "base_url": f"{url}/v1"} for name, url in urls.items()},
        "models": {model: {"providers": providers, "upstream_ids": dict.fromkeys(providers, "echo"), **PRICE}
                   for model, providers in MODELS.items()},
    }, {})


def pools_of_one(runtime: Runtime) -> None:
    for name in ("busy", "crowded", "spare", "tripped", "tripped2"):
        runtime.start_pool(name, 1)
    runtime.start_billing()


@pytest.fixture(scope="module")
def spare() -> Iterator[FakeUpstream]:
    with named_upstream("spare") as fake:
        yield fake


@pytest.fixture(scope="module")
def tripped() -> Iterator[FakeUpstream]:
    with named_upstream("tripped") as fake:
        yield fake


@pytest.fixture(scope="module", params=MODES)
def gateway(request: pytest.FixtureRequest, gated: GatedUpstream, spare: FakeUpstream,  # noqa: F811
            tripped: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Jobs are assumed to take 1 s on a pool that has finished none; no retries."""
    urls = (gated.url, spare.url, tripped.url)  # type: ignore[attr-defined]
    with gateway_in_mode(request.param, config(*urls), tmp_path_factory.mktemp(f"candidates-{request.param}"),
                         roles=pools_of_one, request_timeout=30, default_service_time=1.0, upstream_retries=0,
                         breaker_failures=2, breaker_reset_timeout=RESET_TIMEOUT,
                         admin_token=ADMIN_TOKEN) as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def closed_circuits(gateway: Gateway, gated: GatedUpstream) -> None:  # noqa: F811
    gated.gate.set()
    for provider in ("tripped", "tripped2"):
        assert httpx.post(f"{gateway.url}/admin/providers/{provider}/reset", headers=ADMIN).status_code == 200


def post(gateway: Gateway, key: str, model: str, text: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {key}", **headers},
                      json={"model": model, "messages": [{"role": "user", "content": text}]})


def trip(gateway: Gateway, key: str, provider: str) -> None:
    """Two 500s from ``provider`` (each job answered by spare) open its circuit."""
    for n in range(2):
        assert echoed(gateway, key, f"fail:500@tripped {provider} trip {n}", model=f"{provider}-spare")[
            "x-gatewayz-provider"] == "spare"
    circuits = httpx.get(f"{gateway.url}/health/providers").json()["data"]
    (entry,) = [entry for entry in circuits if entry["provider"] == provider]
    assert [(model["model"], model["circuit"]["state"]) for model in entry["models"]] == [("echo", "open")]


def charges(gateway: Gateway, key: str, expected: int) -> dict[str, tuple[str, int]]:
    """Job id -> (provider, cost) of the key's settled jobs, once ``expected`` are."""
    return {row["job_id"]: (row["provider"], row["cost_micros"])
            for row in usage_rows(gateway, key, expected=expected)}


def test_a_saturated_first_candidate_leaves_the_job_to_an_idle_second(
        gateway: Gateway, gated: GatedUpstream, spare: FakeUpstream) -> None:  # noqa: F811
    key = gateway.create_key("1")
    results: dict[str, httpx.Response] = {}
    threads = saturate(gateway, gated, "busy", key, 3, results)
    try:
        # Alone, the busy pool refuses: 3 ahead and no free slot, 4 s > 2 s.
        alone = post(gateway, key, "busy-model", "hurry", **{"x-gatewayz-max-queue-ms": "2000"})
        assert alone.status_code == 503 and alone.json()["error"]["code"] == "queue_full"
        seen = len(spare.requests)
        answered = post(gateway, key, "busy-spare", "hurry up", **{"x-gatewayz-max-queue-ms": "2000"})
        assert answered.status_code == 200, answered.text
        assert answered.json()["choices"][0]["message"]["content"] == "Echo: hurry up"
        assert answered.headers["x-gatewayz-provider"] == "spare"
        assert int(answered.headers["x-gatewayz-queue-ms"]) < 1000, "the idle pool took it at once"
        assert len(spare.requests) == seen + 1 and "hurry up" not in gated.arrivals
    finally:
        release(gated, threads)
    assert all(results[text].status_code == 200 for text in ("gate", "queued 0", "queued 1", "queued 2"))
    settled = charges(gateway, key, expected=5)
    assert settled[answered.headers["x-gatewayz-job-id"]] == ("spare", cost_of_echo("hurry up"))
    assert len(settled) == 5, "the refused request made no job"


@pytest.mark.parametrize("stream", [False, True])
def test_an_open_circuit_sends_jobs_straight_to_the_next_candidate(
        gateway: Gateway, tripped: FakeUpstream, spare: FakeUpstream, caplog: pytest.LogCaptureFixture,
        stream: bool) -> None:
    key = gateway.create_key("1")
    trip(gateway, key, "tripped")
    seen = (len(tripped.requests), len(spare.requests))
    with caplog.at_level(logging.INFO, logger="workers.pool"):
        answers = [echoed(gateway, key, f"hello {n}", model="tripped-spare", stream=stream) for n in range(3)]
    assert [headers["x-gatewayz-provider"] for headers in answers] == ["spare"] * 3
    assert (len(tripped.requests), len(spare.requests)) == (seen[0], seen[1] + 3), "the open circuit was not called"
    jobs = [headers["x-gatewayz-job-id"] for headers in answers]
    # Not queued for tripped and handed on by its worker: started at spare.
    assert not [record.message for record in caplog.records if any(job in record.message for job in jobs)]
    settled = charges(gateway, key, expected=5)
    assert [settled[job] for job in jobs] == [("spare", cost_of_echo(f"hello {n}")) for n in range(3)]


def test_when_every_candidate_refuses_the_shortest_retry_after_wins(
        gateway: Gateway, gated: GatedUpstream, tripped: FakeUpstream) -> None:  # noqa: F811
    key = gateway.create_key("1")
    trip(gateway, key, "tripped")
    assert gateway.wait_until_settled(key) == 0
    results: dict[str, httpx.Response] = {}
    threads = saturate(gateway, gated, "crowded", key, 3, results)
    try:
        balance, held, seen = gateway.balance(key), gateway.held(key), len(tripped.requests)
        # tripped's circuit closes again in about a minute; crowded would take 4 s, 2 s more than allowed.
        refused = post(gateway, key, "tripped-crowded", "anyone", **{"x-gatewayz-max-queue-ms": "2000"})
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "queue_full" and refused.headers["retry-after"] == "2"
        assert "x-gatewayz-job-id" not in refused.headers, "no job was made"
        assert (gateway.balance(key), gateway.held(key), len(tripped.requests)) == (balance, held, seen)
        assert "anyone" not in gated.arrivals
    finally:
        release(gated, threads)


def test_when_every_circuit_is_open_the_soonest_to_close_says_when_to_retry(
        gateway: Gateway, tripped: FakeUpstream) -> None:
    key = gateway.create_key("1")
    trip(gateway, key, "tripped")
    trip(gateway, key, "tripped2")
    assert gateway.wait_until_settled(key) == 0
    balance, seen = gateway.balance(key), len(tripped.requests)
    sdk = openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=30)
    with pytest.raises(openai.InternalServerError) as raised:
        sdk.chat.completions.create(model="both-tripped", messages=[{"role": "user", "content": "hello"}])
    assert raised.value.status_code == 503 and raised.value.body["code"] == "circuit_open"
    assert "'tripped'" in raised.value.message, "tripped opened first, so it closes first"
    assert 0 < float(raised.value.response.headers["retry-after"]) <= RESET_TIMEOUT
    assert "x-gatewayz-job-id" not in raised.value.response.headers
    assert len(tripped.requests) == seen and gateway.balance(key) == balance


# The ingress's own timeout before a job's first event


def idle_config() -> GatewayConfig:
    """``idle`` has no worker: its jobs wait in its queue until their deadline."""
    return parse_config({
        "providers": {"idle": {"adapter": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {"idle-model": {"providers": ["idle"], **PRICE}},
        "plans": {"metered": {"requests_per_minute": 100, "tokens_per_minute": 1_000_000}},
    }, {})


@pytest.fixture(scope="module", params=MODES)
def unserved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway_in_mode(request.param, idle_config(), tmp_path_factory.mktemp(f"unserved-{request.param}"),
                         roles=lambda runtime: runtime.start_billing(), request_timeout=1.0,
                         admin_token=ADMIN_TOKEN) as gateway:
        yield gateway


@pytest.mark.parametrize("path", ["chat/completions", "messages"])
def test_a_timeout_before_the_first_event_names_the_job(unserved: Gateway, path: str) -> None:
    key = unserved.create_key("1", plan="metered")
    response = httpx.post(f"{unserved.base_url}/{path}", timeout=30, headers={"authorization": f"Bearer {key}"},
                          json={"model": "idle-model", "max_tokens": 5, "stream": path == "messages",
                                "messages": [{"role": "user", "content": "anyone?"}]})
    assert response.status_code == 504, response.text
    error: dict[str, Any] = response.json()["error"]
    assert (error["type"], error.get("code")) == (("timeout_error", None) if path == "messages" else
                                                  ("timeout_error", "timeout"))
    assert response.headers["x-gatewayz-job-id"].startswith("job_")
    assert response.headers["x-gatewayz-priority"] == "standard"
    assert response.headers["x-ratelimit-limit-requests"] == "100"
    assert "x-gatewayz-provider" not in response.headers, "no worker took it: no provider served it"
