"""The operator's account API in both modes: credit adjustments (once per
idempotency key, never below zero) and an account's ledger, paged."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.support.gateway import ADMIN_TOKEN, Gateway

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
REQUEST = {"model": "fake-output-priced", "max_tokens": 4, "messages": [{"role": "user", "content": "a b c"}]}
COST = 8


def adjust(gateway: Gateway, account_id: int | str, body: Any, *, headers: dict[str, str] = ADMIN) -> httpx.Response:
    return httpx.post(f"{gateway.url}/admin/accounts/{account_id}/credits", json=body, headers=headers)


def ledger(gateway: Gateway, account_id: int | str, *, headers: dict[str, str] = ADMIN, **query: Any) -> httpx.Response:
    return httpx.get(f"{gateway.url}/admin/accounts/{account_id}/ledger", params=query, headers=headers)


def error_of(response: httpx.Response) -> tuple[int, str, str | None]:
    error = response.json()["error"]
    return response.status_code, error["type"], error["code"]


def test_an_adjustment_credits_once_per_idempotency_key(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    account_id = gateway.account_id(key)
    body = {"amount": "2.50", "reason": "refund for an outage", "idempotency_key": f"ticket-{uuid.uuid4().hex}"}
    first = adjust(gateway, account_id, body)
    assert first.status_code == 201, first.text
    applied = first.json()
    assert applied["applied"] is True
    assert (applied["account_id"], applied["amount"], applied["amount_micros"], applied["reason"]) == (
        account_id, "2.500000", 2_500_000, "refund for an outage")
    assert (applied["available"], applied["available_micros"]) == ("3.500000", 3_500_000)

    again = adjust(gateway, account_id, body)
    assert again.status_code == 200
    assert {**again.json(), "applied": True} == applied, "a replay answers with the first adjustment"
    assert gateway.balance(key) == 3_500_000

    reused = adjust(gateway, account_id, {**body, "amount": "3"})
    assert error_of(reused) == (409, "invalid_request_error", "idempotency_key_reused")
    assert gateway.balance(key) == 3_500_000
    assert adjust(gateway, account_id, {"amount": "1", "reason": "no key: always applied"}).status_code == 201
    assert adjust(gateway, account_id, {"amount": "1", "reason": "no key: always applied"}).status_code == 201
    assert gateway.balance(key) == 5_500_000
    assert gateway.reconcile(key) == []


def test_concurrent_retries_of_one_adjustment_apply_it_once(gateway: Gateway) -> None:
    key = gateway.create_key("0")
    account_id = gateway.account_id(key)
    body = {"amount": "1", "reason": "goodwill", "idempotency_key": uuid.uuid4().hex}

    async def retries() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway.url, headers=ADMIN, timeout=30) as client:
            return await asyncio.gather(*(client.post(f"/admin/accounts/{account_id}/credits", json=body)
                                          for _ in range(8)))

    responses = asyncio.run(retries())
    assert Counter(response.status_code for response in responses) == {201: 1, 200: 7}
    assert len({response.json()["id"] for response in responses}) == 1
    assert gateway.balance(key) == 1_000_000
    assert gateway.reconcile(key) == []


def test_a_deduction_may_not_take_available_credit_below_zero(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    account_id = gateway.account_id(key)
    deducted = adjust(gateway, account_id, {"amount": "-0.25", "reason": "chargeback"})
    assert deducted.status_code == 201, deducted.text
    assert deducted.json()["available"] == "0.750000"

    refused = adjust(gateway, account_id, {"amount": "-0.750001", "reason": "too much"})
    assert error_of(refused) == (400, "invalid_request_error", "deduction_exceeds_available")
    assert refused.json()["error"]["message"] == (
        f"Deducting 0.750001 credits would take account {account_id} below zero: it has 0.750000 available")
    assert gateway.balance(key) == 750_000, "a refused deduction moves nothing"

    assert adjust(gateway, account_id, {"amount": "-0.75", "reason": "close the account"}).status_code == 201
    assert gateway.balance(key) == 0
    assert httpx.post(f"{gateway.base_url}/chat/completions", json=REQUEST,
                      headers={"authorization": f"Bearer {key}"}).status_code == 402
    assert gateway.reconcile(key) == []


@pytest.mark.parametrize("body", [
    {"amount": "0", "reason": "r"}, {"amount": "lots", "reason": "r"}, {"amount": "1e30", "reason": "r"},
    {"amount": "-1e30", "reason": "r"}, {"amount": "0.0000001", "reason": "r"}, {"amount": "NaN", "reason": "r"},
    {"amount": "1"}, {"amount": "1", "reason": ""}, {"amount": "1", "reason": "x" * 501},
    {"amount": "1", "reason": "r", "idempotency_key": "has space"}, {"amount": "1", "reason": "r", "surprise": 1},
    {"amount": True, "reason": "r"}, [],
])
def test_a_bad_adjustment_is_refused_and_moves_nothing(gateway: Gateway, body: Any) -> None:
    key = gateway.create_key("1")
    assert error_of(adjust(gateway, gateway.account_id(key), body))[:2] == (400, "invalid_request_error")
    assert gateway.balance(key) == 1_000_000


def test_unknown_and_system_accounts_are_404(gateway: Gateway) -> None:
    body = {"amount": "1", "reason": "r"}
    unknown = adjust(gateway, 2_000_000_000, body)
    assert error_of(unknown) == (404, "invalid_request_error", "account_not_found")
    assert "2000000000" in unknown.json()["error"]["message"]
    assert error_of(adjust(gateway, 1, body))[:2] == (404, "invalid_request_error"), "system:grants is not a user"
    assert error_of(ledger(gateway, 2_000_000_000)) == (404, "invalid_request_error", "account_not_found")
    for bad in ("0", "abc", str(2**31)):
        assert adjust(gateway, bad, body).status_code == 400
        assert ledger(gateway, bad).status_code == 400


@pytest.mark.parametrize("call", [
    lambda gateway, headers: adjust(gateway, 1, {"amount": "1", "reason": "r"}, headers=headers),
    lambda gateway, headers: adjust(gateway, 1, {"nonsense": True}, headers=headers),
    lambda gateway, headers: ledger(gateway, 1, headers=headers),
    lambda gateway, headers: ledger(gateway, 1, headers=headers, limit=0),
    lambda gateway, headers: httpx.get(f"{gateway.url}/admin/keys/1", headers=headers),
])
def test_the_account_api_takes_only_the_admin_token(gateway: Gateway, call: Any) -> None:
    user_key = gateway.create_key("1")
    assert call(gateway, {}).status_code == 401, "no details before auth"
    assert error_of(call(gateway, {"authorization": "Bearer not-the-admin-token"}))[2] == "permission_denied"
    assert call(gateway, {"authorization": f"Bearer {user_key}"}).status_code == 403
    assert gateway.balance(user_key) == 1_000_000


def test_the_ledger_lists_every_entry_newest_first_in_pages(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    account_id = gateway.account_id(key)
    bonus = {"amount": "2", "reason": "welcome bonus", "idempotency_key": "bonus-" + key[-8:]}
    assert adjust(gateway, account_id, bonus).status_code == 201
    assert adjust(gateway, account_id, {"amount": "-0.5", "reason": "correction"}).status_code == 201
    chat = httpx.post(f"{gateway.base_url}/chat/completions", json=REQUEST, headers={"authorization": f"Bearer {key}"},
                      timeout=30)
    assert chat.status_code == 200
    assert gateway.wait_for_balance(key, 2_500_000 - COST) == 2_500_000 - COST

    whole = ledger(gateway, account_id, limit=1000)
    assert whole.status_code == 200, whole.text
    entries = whole.json()["data"]
    assert whole.json()["has_more"] is False and whole.json()["next_cursor"] is None
    # The job's hold moves 8 to held; its charge takes it from there (a zero entry is not written).
    assert [(e["kind"], e["bucket"], e["amount_micros"]) for e in reversed(entries)] == [
        ("grant", "available", 1_000_000),
        ("adjustment", "available", 2_000_000),
        ("adjustment", "available", -500_000),
        ("hold", "available", -COST), ("hold", "held", COST),
        ("charge", "held", -COST),
    ]
    by_kind = {e["kind"]: e for e in reversed(entries)}  # the newest of each kind
    assert by_kind["adjustment"]["memo"] == "correction" and by_kind["adjustment"]["amount"] == "-0.500000"
    assert by_kind["charge"]["reference"] == chat.headers["x-gatewayz-job-id"]
    assert all(e["created_at"].endswith("+00:00") for e in entries)
    assert sum(e["amount_micros"] for e in entries if e["bucket"] == "available") == gateway.balance(key)
    assert sum(e["amount_micros"] for e in entries if e["bucket"] == "held") == 0

    pages, cursor = [], None
    while True:
        page = ledger(gateway, account_id, limit=2, **({"cursor": cursor} if cursor else {})).json()
        pages.append(page["data"])
        assert len(page["data"]) <= 2
        cursor = page["next_cursor"]
        assert page["has_more"] is (cursor is not None)
        if cursor is None:
            break
    assert [e for page in pages for e in page] == entries
    assert ledger(gateway, account_id, limit=2, offset=2).json()["data"] == entries[2:4]


@pytest.mark.parametrize("query", [
    {"limit": 0}, {"limit": 1001}, {"limit": "many"}, {"cursor": "abc"}, {"cursor": "0"}, {"cursor": "2147483648"},
    {"offset": -1},
    {"cursor": "5", "offset": 2}, {"surprise": 1},
])
def test_bad_paging_is_refused(gateway: Gateway, query: dict[str, Any]) -> None:
    key = gateway.create_key("1")
    assert error_of(ledger(gateway, gateway.account_id(key), **query))[:2] == (400, "invalid_request_error")
