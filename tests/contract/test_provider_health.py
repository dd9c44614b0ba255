"""Provider health beside the circuits, in both run modes: the success rate
and latency of client requests (passive), and the active prober's (a
dramatiq actor: in-process stub broker embedded, RabbitMQ distributed),
which lists each provider's models, never buys tokens, and runs one round
per interval."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MODES
from tests.support.gateway import ADMIN_TOKEN, Gateway, gateway_in_mode
from tests.support.resilience import Upstreams, resilience_config, two_upstreams

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
INTERVAL = 0.5


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with two_upstreams() as fakes:
        yield fakes


@pytest.fixture(scope="module", params=MODES)
def gateway(request: pytest.FixtureRequest, upstreams: Upstreams,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway_in_mode(request.param, resilience_config(upstreams), tmp_path_factory.mktemp("health"),
                         admin_token=ADMIN_TOKEN, breaker_failures=1_000, upstream_retries=0,
                         probe_interval=INTERVAL, probe_timeout=2) as gateway:
        yield gateway


def health(gateway: Gateway, *, admin: bool = False) -> dict[str, dict[str, Any]]:
    path = "/admin/providers/health" if admin else "/health/providers"
    response = httpx.get(f"{gateway.url}{path}", headers=ADMIN if admin else {})
    assert response.status_code == 200
    return {entry["provider"]: entry for entry in response.json()["data"]}


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.1)


def test_the_prober_lists_each_providers_models(gateway: Gateway, upstreams: Upstreams) -> None:
    eventually(lambda: all(health(gateway)[name]["probe"]["count"] >= 2 for name in ("primary", "backup", "nowhere")))
    listed = health(gateway)
    for name in ("primary", "backup"):
        probe = listed[name]["probe"]
        assert probe["success_rate"] == 1.0 and probe["last_ok"] is True, probe
        assert 0 < probe["latency_ms"]["p50"] <= probe["latency_ms"]["p95"] < 2000
        assert "last_error" not in probe  # it may quote a provider: admin only
    nowhere = listed["nowhere"]["probe"]
    assert nowhere["success_rate"] == 0.0 and nowhere["last_ok"] is False
    assert nowhere["latency_ms"] == {"p50": None, "p95": None}
    assert listed["mock"]["probe"]["count"] == 0  # nothing to list: not probed
    assert "unreachable" in health(gateway, admin=True)["nowhere"]["probe"]["last_error"]


def test_probes_buy_no_tokens_and_run_once_per_interval(gateway: Gateway, upstreams: Upstreams) -> None:
    eventually(lambda: upstreams.primary.listings > 0)
    asked, listed, began = len(upstreams.primary.requests), upstreams.primary.listings, time.monotonic()
    time.sleep(4 * INTERVAL)
    rounds = upstreams.primary.listings - listed
    elapsed = time.monotonic() - began
    assert len(upstreams.primary.requests) == asked, "a probe asked for a completion"
    assert 1 <= rounds <= elapsed / INTERVAL + 1, f"{rounds} rounds in {elapsed:.1f}s"


def test_requests_show_their_success_rate_and_latency(gateway: Gateway, upstreams: Upstreams) -> None:
    sdk = openai.OpenAI(api_key=gateway.create_key("10"), base_url=gateway.base_url, max_retries=0, timeout=30)
    for message in ("one", "two", "fail:500@primary three", "four"):
        answer = sdk.chat.completions.create(model="duo", messages=[{"role": "user", "content": message}])
        assert answer.choices[0].message.content == f"Echo: {message}"  # backup answered the failed one
    # Outcomes are recorded right after each attempt, before its answer is complete.
    primary = health(gateway, admin=True)["primary"]["requests"]
    assert primary["count"] >= 4 and primary["success_rate"] < 1.0
    assert "500" in primary["last_error"]
    assert 0 < primary["latency_ms"]["p50"] <= primary["latency_ms"]["p95"]
    backup = health(gateway)["backup"]["requests"]
    assert backup["count"] >= 1 and backup["success_rate"] == 1.0 and backup["last_ok"] is True


def test_a_request_refused_for_its_own_fault_says_nothing_of_the_provider(gateway: Gateway) -> None:
    sdk = openai.OpenAI(api_key=gateway.create_key("10"), base_url=gateway.base_url, max_retries=0, timeout=30)
    before = health(gateway)["primary"]["requests"]["count"]
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="solo", messages=[{"role": "user", "content": "fail:400 mine"}])
    assert health(gateway)["primary"]["requests"]["count"] == before
