"""Circuit breakers and provider health, in both run modes: after repeated
failures a provider's circuit opens and jobs skip it (its upstream sees no
more requests), one probe closes it again, and ``/health/providers`` and the
admin API show it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MODES
from tests.support.gateway import ADMIN_TOKEN, Gateway, gateway_in_mode
from tests.support.resilience import Upstreams, cost_of_echo, echoed, resilience_config, two_upstreams, usage_rows

GRANT = 10_000_000
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
RESET_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with two_upstreams() as fakes:
        yield fakes


@pytest.fixture(scope="module", params=MODES)
def gateway(request: pytest.FixtureRequest, upstreams: Upstreams,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Circuits open after 2 consecutive failures and probe after 2 s; no retries."""
    with gateway_in_mode(request.param, resilience_config(upstreams), tmp_path_factory.mktemp("breakers"),
                         admin_token=ADMIN_TOKEN, breaker_failures=2, breaker_reset_timeout=RESET_TIMEOUT,
                         upstream_retries=0) as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def closed_circuits(gateway: Gateway) -> None:
    for provider in ("primary", "backup", "nowhere"):
        response = httpx.post(f"{gateway.url}/admin/providers/{provider}/reset", headers=ADMIN)
        assert response.status_code == 200 and response.json()["status"] == "ok"


@pytest.fixture
def key(gateway: Gateway) -> str:
    return gateway.create_key("10")


def ask(gateway: Gateway, key: str, message: str, *, model: str = "duo", stream: bool = False) -> str:
    """Which provider answered (``x-gatewayz-provider``)."""
    return echoed(gateway, key, message, model=model, stream=stream)["x-gatewayz-provider"]


def health(gateway: Gateway, *, admin: bool = False) -> dict[str, dict[str, Any]]:
    path = "/admin/providers/health" if admin else "/health/providers"
    response = httpx.get(f"{gateway.url}{path}", headers=ADMIN if admin else {})
    assert response.status_code == 200
    return {entry["provider"]: entry for entry in response.json()["data"]}


def model_circuit(entry: dict[str, Any], model: str) -> dict[str, Any]:
    return next(item["circuit"] for item in entry["models"] if item["model"] == model)


def trip_primary(gateway: Gateway, key: str) -> None:
    """Two 500s on the primary's ``duo``: each job is answered by backup, and the circuit opens."""
    assert [ask(gateway, key, f"fail:500@primary trip {n}") for n in range(2)] == ["backup", "backup"]


def test_the_circuit_opens_jobs_skip_the_provider_and_a_probe_closes_it(
        gateway: Gateway, key: str, upstreams: Upstreams) -> None:
    before = upstreams.seen()
    trip_primary(gateway, key)
    primary = health(gateway)["primary"]
    circuit = model_circuit(primary, "duo")
    assert primary["status"] == "degraded" and primary["circuit"]["state"] == "closed"
    assert (circuit["state"], circuit["failures"], circuit["recent_failures"]) == ("open", 2, 2)
    assert circuit["retry_at"] is not None and "last_error" not in circuit, "no error text on the public view"

    assert [ask(gateway, key, f"hello {n}", stream=n % 2 == 1) for n in range(4)] == ["backup"] * 4
    assert upstreams.seen()[0] - before[0] == 2, "the open circuit keeps every job away from the upstream"

    time.sleep(RESET_TIMEOUT)
    assert ask(gateway, key, "hello again") == "primary", "the probe goes through, and succeeds"
    assert model_circuit(health(gateway)["primary"], "duo")["state"] == "closed"
    assert health(gateway)["primary"]["status"] == "ok"

    spent = sum(cost_of_echo(m) for m in ["fail:500@primary trip 0", "fail:500@primary trip 1", "hello again",
                                          *(f"hello {n}" for n in range(4))])
    assert gateway.wait_for_balance(key, GRANT - spent) == GRANT - spent, "each job charged once"
    assert len(usage_rows(gateway, key, expected=7)) == 7


def test_half_open_lets_exactly_one_probe_through(gateway: Gateway, key: str, upstreams: Upstreams) -> None:
    trip_primary(gateway, key)
    time.sleep(RESET_TIMEOUT)
    before = upstreams.seen()
    with ThreadPoolExecutor(4) as pool:
        answered = list(pool.map(lambda n: ask(gateway, key, f"slow probe {n} one two three four", stream=True),
                                 range(4)))
    assert upstreams.seen()[0] - before[0] == 1, "one probe, while the others went to backup"
    assert sorted(answered) == ["backup", "backup", "backup", "primary"]
    assert model_circuit(health(gateway)["primary"], "duo")["state"] == "closed"


def test_a_failed_probe_opens_the_circuit_again(gateway: Gateway, key: str, upstreams: Upstreams) -> None:
    trip_primary(gateway, key)
    opened = model_circuit(health(gateway)["primary"], "duo")["opened_at"]
    time.sleep(RESET_TIMEOUT)
    assert ask(gateway, key, "fail:500@primary probe") == "backup"
    circuit = model_circuit(health(gateway)["primary"], "duo")
    assert circuit["state"] == "open" and circuit["opened_at"] > opened
    before = upstreams.seen()
    assert ask(gateway, key, "still open?") == "backup" and upstreams.seen()[0] == before[0]


def test_with_no_candidate_left_an_open_circuit_is_a_503_with_retry_after(
        gateway: Gateway, key: str, upstreams: Upstreams) -> None:
    sdk = openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=30)
    for n in range(2):
        with pytest.raises(openai.InternalServerError) as raised:
            sdk.chat.completions.create(model="solo", messages=[{"role": "user", "content": f"fail:500@primary {n}"}])
        assert raised.value.status_code == 502
    before = upstreams.seen()
    with pytest.raises(openai.InternalServerError) as raised:
        sdk.chat.completions.create(model="solo", messages=[{"role": "user", "content": "hello"}])
    assert raised.value.status_code == 503 and raised.value.body["code"] == "circuit_open"
    assert 0 < float(raised.value.response.headers["retry-after"]) <= RESET_TIMEOUT
    assert upstreams.seen() == before, "nothing was sent upstream"
    # Refused by the ingress, which saw the circuit open: no job was queued, nothing held.
    assert "x-gatewayz-job-id" not in raised.value.response.headers
    assert gateway.wait_for_balance(key, GRANT) == GRANT
    assert [row["cost_micros"] for row in usage_rows(gateway, key, expected=2)] == [0, 0]


def test_an_unreachable_provider_opens_its_own_circuit(gateway: Gateway, key: str) -> None:
    assert [ask(gateway, key, f"knock {n}", model="far") for n in range(3)] == ["backup"] * 3
    nowhere = health(gateway)["nowhere"]
    assert (nowhere["status"], nowhere["circuit"]["state"]) == ("down", "open")
    assert health(gateway)["backup"]["status"] == "ok"


def test_rate_limits_do_not_open_the_circuit(gateway: Gateway, key: str) -> None:
    assert [ask(gateway, key, f"fail:429@primary {n}") for n in range(3)] == ["backup"] * 3
    assert health(gateway)["primary"]["status"] == "ok"
    assert ask(gateway, key, "hello") == "primary"


def test_the_admin_view_shows_errors_and_a_reset_closes_the_circuit(gateway: Gateway, key: str) -> None:
    trip_primary(gateway, key)
    circuit = model_circuit(health(gateway, admin=True)["primary"], "duo")
    assert circuit["last_error"] == "provider 'primary' answered 500: fake failure 500"

    response = httpx.post(f"{gateway.url}/admin/providers/primary/reset", headers=ADMIN)
    assert response.status_code == 200
    assert response.json()["status"] == "ok" and response.json()["models"] == []
    assert ask(gateway, key, "back to work") == "primary"


def test_the_admin_view_needs_the_token_and_a_known_provider(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/admin/providers/health").status_code == 401
    assert httpx.post(f"{gateway.url}/admin/providers/primary/reset",
                      headers={"authorization": "Bearer nope"}).status_code == 403
    response = httpx.post(f"{gateway.url}/admin/providers/ghost/reset", headers=ADMIN)
    assert response.status_code == 404 and response.json()["error"]["code"] == "provider_not_found"


def test_health_lists_every_provider(gateway: Gateway, key: str) -> None:
    assert ask(gateway, key, "fail:500@primary for backup") == "backup"  # whichever tests ran before this one
    listed = health(gateway)
    assert set(listed) == {"primary", "backup", "nowhere", "mock"}
    backup = listed["backup"]
    requests, probe = backup.pop("requests"), backup.pop("probe")
    assert backup == {"object": "provider_health", "provider": "backup", "status": "ok", "models": [],
                      "circuit": {"state": "closed", "failures": 0, "recent_failures": 0,
                                  "last_error_at": None, "opened_at": None, "retry_at": None}}
    # Backup answered every request this module's tests sent it; no prober runs here.
    assert requests["count"] > 0 and requests["success_rate"] == 1.0 and requests["last_ok"] is True
    assert 0 < requests["latency_ms"]["p50"] <= requests["latency_ms"]["p95"]
    assert probe == {"count": 0, "success_rate": None, "latency_ms": {"p50": None, "p95": None}, "last_at": None,
                     "last_ok": None}
