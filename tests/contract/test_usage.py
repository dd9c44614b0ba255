"""``GET /user/usage`` in both modes: the caller's account's settled requests,
newest first, filtered and paged, with totals by model and by UTC day."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.support.gateway import Gateway

CHEAP = {"model": "fake-output-priced", "max_tokens": 4, "messages": [{"role": "user", "content": "a b c"}]}
PRICED = {"model": "fake-small", "messages": [{"role": "user", "content": "one two"}]}


def usage(gateway: Gateway, key: str, **query: Any) -> httpx.Response:
    return httpx.get(f"{gateway.url}/user/usage", params=query, headers={"authorization": f"Bearer {key}"})


def chat(gateway: Gateway, key: str, body: dict[str, Any]) -> httpx.Response:
    response = httpx.post(f"{gateway.base_url}/chat/completions", json=body, headers={"authorization": f"Bearer {key}"},
                          timeout=30)
    assert response.status_code == 200, response.text
    return response


@pytest.fixture(scope="module")
def account(gateway: Gateway) -> dict[str, Any]:
    """One account with two keys and four settled requests, and a stranger with one."""
    first = gateway.create_key("1")
    second = gateway.create_key(account_id=gateway.account_id(first))
    stranger = gateway.create_key("1")
    jobs = [chat(gateway, key, body) for key, body in
            ((first, CHEAP), (first, PRICED), (second, CHEAP), (first, CHEAP), (stranger, CHEAP))]
    assert gateway.wait_until_settled(first) == 0 and gateway.wait_until_settled(stranger) == 0
    return {"first": first, "second": second, "stranger": stranger,
            "jobs": [response.headers["x-gatewayz-job-id"] for response in jobs[:4]],
            "costs": [Decimal(response.headers["x-gatewayz-cost"]) for response in jobs[:4]]}


def test_rows_are_the_accounts_own_newest_first_with_totals(gateway: Gateway, account: dict[str, Any]) -> None:
    response = usage(gateway, account["first"])
    assert response.status_code == 200, response.text
    body = response.json()
    rows = body["data"]
    assert [row["job_id"] for row in rows] == account["jobs"][::-1]
    assert (body["has_more"], body["next_cursor"]) == (False, None)
    newest = rows[0]
    assert newest["key_id"] == gateway.key_id(account["first"])
    assert rows[1]["key_id"] == gateway.key_id(account["second"])
    assert (newest["provider"], newest["model"], newest["output_tokens"], newest["reported"]) == (
        "fake", "fake-output-priced", 4, True)
    assert (newest["cost"], newest["cost_micros"]) == ("0.000008", 8)
    assert [Decimal(row["cost"]) for row in rows] == account["costs"][::-1]
    assert datetime.fromisoformat(newest["created_at"]).utcoffset().total_seconds() == 0

    totals = body["totals"]
    spent = sum(account["costs"])
    assert (totals["requests"], Decimal(totals["cost"]), totals["cost_micros"]) == (4, spent, int(spent * 10**6))
    assert totals["input_tokens"] == sum(row["input_tokens"] for row in rows)
    assert [(m["model"], m["requests"], m["cost"]) for m in totals["by_model"]] == [
        ("fake-output-priced", 3, "0.000024"), ("fake-small", 1, str(account["costs"][1]))]
    # By the UTC day each request was recorded on (all today, unless the requests straddled midnight).
    days: dict[str, list[Decimal]] = {}
    for row in rows:
        days.setdefault(datetime.fromisoformat(row["created_at"]).astimezone(UTC).date().isoformat(), []).append(
            Decimal(row["cost"]))
    assert [(d["day"], d["requests"], Decimal(d["cost"])) for d in totals["by_day"]] == [
        (day, len(costs), sum(costs)) for day, costs in sorted(days.items())]
    assert sum(d["requests"] for d in totals["by_day"]) == 4

    stranger = usage(gateway, account["stranger"]).json()
    assert len(stranger["data"]) == 1 and stranger["totals"]["requests"] == 1


def test_filters(gateway: Gateway, account: dict[str, Any]) -> None:
    key, rows = account["first"], usage(gateway, account["first"]).json()["data"]
    only_small = usage(gateway, key, model="fake-small").json()
    assert [row["job_id"] for row in only_small["data"]] == [account["jobs"][1]]
    assert only_small["totals"]["requests"] == 1
    assert [m["model"] for m in only_small["totals"]["by_model"]] == ["fake-small"]
    second_key = usage(gateway, key, key_id=gateway.key_id(account["second"])).json()
    assert [row["job_id"] for row in second_key["data"]] == [account["jobs"][2]]
    strangers_key = usage(gateway, key, key_id=gateway.key_id(account["stranger"])).json()
    assert strangers_key["data"] == [] and strangers_key["totals"]["requests"] == 0
    assert strangers_key["totals"]["by_model"] == [] and strangers_key["totals"]["cost"] == "0.000000"
    assert usage(gateway, key, model="no-such-model").json()["data"] == []

    assert usage(gateway, key, start=int(time.time()) + 3600).json()["data"] == [], "unix seconds"
    assert usage(gateway, key, end="2000-01-01T00:00:00Z").json()["data"] == []
    assert len(usage(gateway, key, start="2000-01-01", end=int(time.time()) + 3600).json()["data"]) == 4
    # start is inclusive, end exclusive, to the stored precision.
    boundary = rows[1]["created_at"]
    moments = [datetime.fromisoformat(row["created_at"]) for row in rows]
    at_or_after = usage(gateway, key, start=boundary).json()["data"]
    before = usage(gateway, key, end=boundary).json()["data"]
    assert len(at_or_after) == sum(m >= moments[1] for m in moments) >= 2
    assert len(before) == sum(m < moments[1] for m in moments)
    assert len(at_or_after) + len(before) == 4
    between = moments[1] + timedelta(milliseconds=500)  # finer than SQLite keeps
    assert len(usage(gateway, key, start=between.isoformat()).json()["data"]) == sum(m >= between for m in moments)
    assert len(usage(gateway, key, end=between.isoformat()).json()["data"]) == sum(m < between for m in moments)


def test_pages_by_cursor_or_offset(gateway: Gateway, account: dict[str, Any]) -> None:
    key = account["first"]
    everything = usage(gateway, key).json()["data"]
    seen, cursor = [], None
    while True:
        page = usage(gateway, key, limit=1, **({"cursor": cursor} if cursor else {})).json()
        seen += page["data"]
        assert page["totals"]["requests"] == 4, "totals cover every matching row, not the page"
        cursor = page["next_cursor"]
        assert page["has_more"] is (cursor is not None)
        if cursor is None:
            break
    assert seen == everything
    assert usage(gateway, key, limit=2, offset=1).json()["data"] == everything[1:3]
    assert usage(gateway, key, offset=4).json()["data"] == []


@pytest.mark.parametrize("query", [
    {"limit": 0}, {"limit": 1001}, {"cursor": "x1"}, {"cursor": "9999999999"}, {"offset": -1},
    {"cursor": "3", "offset": 1},
    {"start": "yesterday"}, {"end": "2024-13-01"}, {"start": "2024-01-02", "end": "2024-01-01"},
    {"key_id": 0}, {"key_id": 2**31}, {"model": ""}, {"models": "fake-small"},
])
def test_bad_queries_are_refused(gateway: Gateway, account: dict[str, Any], query: dict[str, Any]) -> None:
    response = usage(gateway, account["first"], **query)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_usage_needs_a_key(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/user/usage").status_code == 401
    assert httpx.get(f"{gateway.url}/user/usage", params={"limit": 0}).status_code == 401, "no details before auth"
    assert httpx.get(f"{gateway.url}/user/usage", headers={"authorization": "Bearer gz-nope"}).status_code == 401
