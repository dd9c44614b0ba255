"""The monitoring API in both run modes, against traffic the test makes: a
fresh gateway (its own database) serves a known set of requests, and every
endpoint must show exactly them: counts, errors, tokens, cost, the request
log's paging and filters, uptime with its incident, the anomaly, the public
rankings; and the admin endpoints refuse a missing or wrong token in
OpenAI's error format, as they refuse a bad parameter (400, never 500)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MODES
from tests.support.gateway import ADMIN_TOKEN, Gateway, gateway_in_mode
from tests.support.resilience import cost_of_echo, echoed, resilience_config, two_upstreams

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
OK_MESSAGES = ["hello there", "three small words", "four words right here"]
STREAMED = "streamed five words right here"
FAILING = ["fail:500@primary one", "fail:500@primary two"]
FAILED_OVER = "fail:500@primary over"  # duo: primary fails, backup answers it
ADMIN_PATHS = ["/api/monitoring/health", "/api/monitoring/stats/realtime", "/api/monitoring/stats/timeseries",
               "/api/monitoring/error-rates", "/api/monitoring/cost-analysis", "/api/monitoring/chat-requests",
               "/api/monitoring/chat-requests/counts", "/api/monitoring/chat-requests/models",
               "/api/monitoring/anomalies"]


@dataclass
class Traffic:
    key: str
    account_id: int
    spent: int  # micro-credits, by the account's balance
    jobs: set[str]
    settled_at: float  # time.monotonic() once every job settled


@pytest.fixture(scope="module", params=MODES)
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Circuits that stay closed through the test's failures, and no
    retries: each failure is one job's. Its own upstreams and database."""
    with (two_upstreams() as upstreams,
          gateway_in_mode(request.param, resilience_config(upstreams), tmp_path_factory.mktemp("monitoring"),
                          admin_token=ADMIN_TOKEN, breaker_failures=50, upstream_retries=0) as gateway):
        yield gateway


def tokens(message: str) -> tuple[int, int]:
    """The fake's usage of one echoed message: a token per word."""
    words = len(message.split())
    return words, words + 1


@pytest.fixture(scope="module")
def traffic(gateway: Gateway) -> Traffic:
    """The module's only traffic: on ``solo`` (primary), three answers, one
    stream, two failures; on ``duo``, one job that fails over to backup."""
    grant = 10_000_000
    key = gateway.create_key("10")
    for message in OK_MESSAGES:
        echoed(gateway, key, message, model="solo")
    echoed(gateway, key, STREAMED, model="solo", stream=True)
    sdk = openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=30)
    for message in FAILING:
        with pytest.raises(openai.APIStatusError) as failed:
            sdk.chat.completions.create(model="solo", messages=[{"role": "user", "content": message}])
        assert failed.value.status_code >= 500
    assert echoed(gateway, key, FAILED_OVER, model="duo")["x-gatewayz-provider"] == "backup"
    assert gateway.wait_until_settled(key) == 0
    spent = grant - gateway.balance(key)
    assert spent == sum(cost_of_echo(message) for message in [*OK_MESSAGES, STREAMED, FAILED_OVER])
    log = admin(gateway, "/api/monitoring/chat-requests", account_id=gateway.account_id(key))["data"]
    return Traffic(key, gateway.account_id(key), spent, {row["job_id"] for row in log}, time.monotonic())


def admin(gateway: Gateway, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}{path}", headers=ADMIN, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def public(gateway: Gateway, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}{path}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


ANSWERED = [*OK_MESSAGES, STREAMED, FAILED_OVER]
INPUT = sum(tokens(message)[0] for message in ANSWERED)
OUTPUT = sum(tokens(message)[1] for message in ANSWERED)


def test_realtime_stats_count_the_traffic(gateway: Gateway, traffic: Traffic) -> None:
    stats = admin(gateway, "/api/monitoring/stats/realtime")
    # The last minute is minute-granular (from the start of the minute 60 s ago): it surely holds traffic this recent.
    windows = ("last_minute", "last_hour") if time.monotonic() - traffic.settled_at < 55 else ("last_hour",)
    for window in windows:
        seen = stats[window]
        assert (seen["requests"], seen["errors"]) == (7, 2), window
        assert (seen["input_tokens"], seen["output_tokens"]) == (INPUT, OUTPUT)
        assert seen["cost_micros"] == traffic.spent
        assert seen["error_rate"] == round(2 / 7, 4)
        latency = seen["latency_ms"]
        assert latency["mean"] > 0 and 0 < latency["p50"] <= latency["p95"]
        assert seen["ttft_ms"]["mean"] > 0
    series = admin(gateway, "/api/monitoring/stats/timeseries", window=3600)["data"]
    assert sum(minute["requests"] for minute in series) == 7
    assert sum(minute["errors"] for minute in series) == 2


def test_error_rates_by_provider_and_model(gateway: Gateway, traffic: Traffic) -> None:
    rates = {(row["provider"], row["model"]): row
             for row in admin(gateway, "/api/monitoring/error-rates", window=3600)["data"]}
    assert set(rates) == {("primary", "solo"), ("backup", "duo")}
    solo, duo = rates["primary", "solo"], rates["backup", "duo"]
    assert (solo["requests"], solo["errors"], solo["upstream_errors"], solo["error_rate"]) == (6, 2, 2, 0.3333)
    assert (duo["requests"], duo["errors"], duo["error_rate"]) == (1, 0, 0.0)


def test_cost_analysis_by_provider_model_account_and_day(gateway: Gateway, traffic: Traffic) -> None:
    analysis = admin(gateway, "/api/monitoring/cost-analysis", account_id=traffic.account_id)
    assert analysis["total_micros"] == traffic.spent
    rows = analysis["data"]
    assert {row["account_id"] for row in rows} == {traffic.account_id}
    by_model = {row["model"]: row["cost_micros"] for row in analysis["by"]["model"]}
    assert by_model == {"solo": sum(cost_of_echo(m) for m in [*OK_MESSAGES, STREAMED]),
                        "duo": cost_of_echo(FAILED_OVER)}
    assert {row["provider"]: row["cost_micros"] for row in analysis["by"]["provider"]} == {
        "primary": by_model["solo"], "backup": by_model["duo"]}
    assert sum(row["cost_micros"] for row in analysis["by"]["day"]) == traffic.spent
    assert all(len(row["day"]) == 10 for row in rows), "UTC days, YYYY-MM-DD"
    assert sum(row["requests"] for row in rows) == 7
    only_backup = admin(gateway, "/api/monitoring/cost-analysis", account_id=traffic.account_id, provider="backup")
    assert only_backup["total_micros"] == cost_of_echo(FAILED_OVER)
    assert admin(gateway, "/api/monitoring/cost-analysis", account_id=traffic.account_id + 1000)["data"] == []


def test_the_request_log_pages_and_filters(gateway: Gateway, traffic: Traffic) -> None:
    assert len(traffic.jobs) == 7
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"account_id": traffic.account_id, "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = admin(gateway, "/api/monitoring/chat-requests", **params)
        assert page["bodies_stored"] is False
        seen += [row["job_id"] for row in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        assert page["has_more"] is (cursor is not None)
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 7 and set(seen) == traffic.jobs, "every job once, newest first"
    offset = admin(gateway, "/api/monitoring/chat-requests", account_id=traffic.account_id, limit=2, offset=5)
    assert [row["job_id"] for row in offset["data"]] == seen[5:]

    errors = admin(gateway, "/api/monitoring/chat-requests", account_id=traffic.account_id, outcome="error")["data"]
    assert len(errors) == 2
    for row in errors:
        assert row["ok"] is False and row["status"] >= 500 and row["error_type"]
        assert (row["provider"], row["model"], row["cost_micros"], row["output_tokens"]) == ("primary", "solo", 0, 0)
        assert row["ttft_ms"] is None and row["latency_ms"] is not None and row["queue_ms"] is not None
    answered = admin(gateway, "/api/monitoring/chat-requests", account_id=traffic.account_id, outcome="ok")["data"]
    assert len(answered) == 5 and all(row["status"] == 200 and row["latency_ms"] is not None for row in answered)
    assert sum(row["cost_micros"] for row in answered) == traffic.spent
    assert all(row["ttft_ms"] is not None and row["ttft_ms"] <= row["latency_ms"] for row in answered)
    (backup,) = admin(gateway, "/api/monitoring/chat-requests", account_id=traffic.account_id,
                      provider="backup")["data"]
    assert (backup["model"], backup["input_tokens"], backup["output_tokens"]) == ("duo", *tokens(FAILED_OVER))
    key_id = gateway.key_id(traffic.key)
    assert len(admin(gateway, "/api/monitoring/chat-requests", key_id=key_id, model="solo")["data"]) == 6

    counts = admin(gateway, "/api/monitoring/chat-requests/counts", account_id=traffic.account_id)
    assert (counts["total"], counts["errors"], counts["by_status"]["200"]) == (7, 2, 5)
    models = admin(gateway, "/api/monitoring/chat-requests/models", account_id=traffic.account_id)["data"]
    assert [(row["model"], row["requests"], row["errors"]) for row in models] == [("solo", 6, 2), ("duo", 1, 0)]


def test_uptime_shows_the_failures_as_an_incident(gateway: Gateway, traffic: Traffic) -> None:
    providers = {row["provider"]: row for row in
                 public(gateway, "/health/providers/uptime", window=3600, bucket=60)["data"]}
    primary, backup = providers["primary"], providers["backup"]
    assert (primary["requests"], primary["upstream_errors"], primary["uptime"]) == (6, 2, 0.6667)
    assert primary["incidents"] and sum(item["upstream_errors"] for item in primary["incidents"]) == 2
    assert sum(bucket["requests"] for bucket in primary["buckets"]) == 6
    assert 60 <= len(primary["buckets"]) <= 62, "one bar a minute over the hour"
    assert (backup["requests"], backup["uptime"], backup["incidents"]) == (1, 1.0, [])
    assert providers["nowhere"]["requests"] == 0 and providers["nowhere"]["circuit"] == "closed"
    assert primary["circuit"] == "closed"
    models = {row["model"]: row for row in public(gateway, "/health/models/uptime", window=3600)["data"]}
    assert (models["solo"]["requests"], models["solo"]["upstream_errors"]) == (6, 2)
    assert (models["duo"]["requests"], models["duo"]["incidents"]) == (1, [])
    lenient = public(gateway, "/health/providers/uptime", window=3600, threshold=0.5)["data"]
    assert next(row for row in lenient if row["provider"] == "primary")["incidents"] == []


def test_anomalies_name_the_failing_model(gateway: Gateway, traffic: Traffic) -> None:
    found = admin(gateway, "/api/monitoring/anomalies", min_requests=5)
    assert "error rate" in found["rule"]
    assert [(item["provider"], item["model"], item["kind"], item["recent_requests"]) for item in found["data"]] == [
        ("primary", "solo", "error_rate", 6)]
    assert admin(gateway, "/api/monitoring/anomalies", min_requests=7)["data"] == [], "too few jobs to judge"


def test_public_rankings_and_summary(gateway: Gateway, traffic: Traffic) -> None:
    trending = public(gateway, "/v1/models/trending", window=3600)["data"]
    assert [(row["id"], row["requests"]) for row in trending] == [("solo", 6), ("duo", 1)]
    assert trending[1]["tokens"] == sum(tokens(FAILED_OVER))
    assert public(gateway, "/v1/models/trending", limit=1)["data"][0]["id"] == "solo"
    fastest = public(gateway, "/v1/models/low-latency", window=3600)["data"]
    assert {row["id"] for row in fastest} == {"solo", "duo"}
    assert fastest[0]["ttft_ms"] <= fastest[1]["ttft_ms"]
    assert all(row["tokens_per_second"] > 0 for row in fastest)
    by_throughput = public(gateway, "/v1/models/low-latency", sort="throughput")["data"]
    assert by_throughput[0]["tokens_per_second"] >= by_throughput[1]["tokens_per_second"]
    assert public(gateway, "/v1/models/low-latency", min_requests=2)["data"][0]["id"] == "solo"
    summary = public(gateway, "/v1/gateways/summary", window=3600)
    assert (summary["requests"], summary["errors"]) == (7, 2)
    assert (summary["input_tokens"], summary["output_tokens"]) == (INPUT, OUTPUT)
    assert {row["provider"] for row in summary["providers"]} == set(gateway.config.providers)
    assert "cost" not in str(summary), "public: no money"


def test_monitoring_health(gateway: Gateway, traffic: Traffic) -> None:
    health = admin(gateway, "/api/monitoring/health")
    assert health["status"] == "ok" and health["database"]["status"] == "ok"
    assert health["providers"] == {"total": len(gateway.config.providers), "down": []}
    assert health["last_settled_minute"] is not None


@pytest.mark.parametrize("path", ADMIN_PATHS)
def test_the_admin_endpoints_refuse_other_tokens(gateway: Gateway, path: str) -> None:
    missing = httpx.get(f"{gateway.url}{path}")
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"
    user_key = gateway.create_key("1")
    wrong = httpx.get(f"{gateway.url}{path}", headers={"authorization": f"Bearer {user_key}"})
    assert wrong.status_code == 403
    assert wrong.json()["error"]["type"] == "permission_error"


@pytest.mark.parametrize(("path", "params", "param"), [
    ("/api/monitoring/error-rates", {"window": "10"}, "window"),
    ("/api/monitoring/chat-requests", {"outcome": "maybe"}, "outcome"),
    ("/api/monitoring/chat-requests", {"limit": "0"}, "limit"),
    ("/api/monitoring/chat-requests", {"account_id": "99999999999"}, "account_id"),
    ("/api/monitoring/cost-analysis", {"window": "abc"}, "window"),
    ("/api/monitoring/anomalies", {"unknown": "1"}, "unknown"),
    ("/health/providers/uptime", {"bucket": "90"}, "bucket"),
    ("/health/models/uptime", {"threshold": "2"}, "threshold"),
    ("/v1/models/trending", {"limit": "1000"}, "limit"),
    ("/v1/models/low-latency", {"sort": "cheapest"}, "sort"),
    ("/v1/gateways/summary", {"window": "-5"}, "window"),
])
def test_bad_parameters_get_a_400_in_openai_format(gateway: Gateway, path: str, params: dict[str, str],
                                                   param: str) -> None:
    response = httpx.get(f"{gateway.url}{path}", headers=ADMIN, params=params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and param in error["message"]
