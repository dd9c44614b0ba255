"""Stripe top-ups through ``POST /webhooks/stripe``, in both modes: a paid
checkout credits its account once however often Stripe delivers it, and
anything unsigned, stale, malformed or uncreditable moves no money."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.support.gateway import STRIPE_WEBHOOK_SECRET, Gateway


def signature(payload: str, *, secret: str = STRIPE_WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header as Stripe builds it."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def checkout_event(session: dict[str, Any], *, type_: str = "checkout.session.completed") -> str:
    body = {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": type_,
        "data": {"object": {"object": "checkout.session", "id": f"cs_test_{uuid.uuid4().hex[:12]}",
                            "payment_status": "paid", **session}},
    }
    return json.dumps(body)


def deliver(gateway: Gateway, payload: str, header: str | None = None) -> httpx.Response:
    headers = {"content-type": "application/json",
               "stripe-signature": signature(payload) if header is None else header}
    return httpx.post(f"{gateway.url}/webhooks/stripe", content=payload.encode(), headers=headers)


def assert_refused(response: httpx.Response, *, mentions: str, code: str = "invalid_webhook") -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code
    assert mentions in error["message"]


def test_a_paid_checkout_credits_once_however_often_it_is_delivered(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    payload = checkout_event({"metadata": {"account_id": str(gateway.account_id(key)), "credits": "2.5"}})

    first = deliver(gateway, payload)
    assert first.status_code == 200, first.text
    assert first.json() == {"received": True, "credited": True}
    assert gateway.balance(key) == 3_500_000

    for _ in range(3):  # Stripe retries, with a fresh signature each time
        again = deliver(gateway, payload)
        assert again.status_code == 200, again.text
        assert again.json() == {"received": True, "credited": False}
    assert gateway.balance(key) == 3_500_000
    assert gateway.reconcile(key) == []


def test_concurrent_deliveries_of_one_event_credit_once(gateway: Gateway) -> None:
    key = gateway.create_key("0")
    payload = checkout_event({"metadata": {"account_id": str(gateway.account_id(key)), "credits": "1"}})
    header = signature(payload)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            return await asyncio.gather(*(
                client.post("/webhooks/stripe", content=payload.encode(), headers={"stripe-signature": header})
                for _ in range(10)
            ))

    responses = asyncio.run(burst())
    assert [response.status_code for response in responses] == [200] * 10
    assert sorted(response.json()["credited"] for response in responses) == [False] * 9 + [True]
    assert gateway.balance(key) == 1_000_000
    assert gateway.reconcile(key) == []


def test_amount_total_in_cents_and_client_reference_id(gateway: Gateway) -> None:
    key = gateway.create_key("0")
    payload = checkout_event({"client_reference_id": str(gateway.account_id(key)), "amount_total": 1999,
                              "currency": "usd"})
    assert deliver(gateway, payload).json() == {"received": True, "credited": True}
    assert gateway.balance(key) == 19_990_000  # credits_per_usd = 1
    assert gateway.reconcile(key) == []


def test_a_delayed_payment_credits_when_it_clears_not_when_the_checkout_completes(gateway: Gateway) -> None:
    key = gateway.create_key("0")
    session = {"metadata": {"account_id": str(gateway.account_id(key)), "credits": "4"}, "payment_status": "unpaid"}
    assert deliver(gateway, checkout_event(session)).json() == {"received": True, "credited": False}
    assert gateway.balance(key) == 0
    cleared = checkout_event({**session, "payment_status": "paid"}, type_="checkout.session.async_payment_succeeded")
    assert deliver(gateway, cleared).json() == {"received": True, "credited": True}
    assert gateway.balance(key) == 4_000_000


def test_other_event_types_are_received_and_credit_nothing(gateway: Gateway) -> None:
    key = gateway.create_key("0")
    customer = {"object": "customer", "metadata": {"account_id": str(gateway.account_id(key))}}
    payload = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": "customer.created",
                          "data": {"object": customer}})
    response = deliver(gateway, payload)
    assert response.status_code == 200
    assert response.json() == {"received": True, "credited": False}
    assert gateway.balance(key) == 0


@pytest.mark.parametrize("case", ["wrong secret", "tampered body", "stale timestamp", "no header", "garbled header"])
def test_an_unverifiable_signature_is_refused(gateway: Gateway, case: str) -> None:
    key = gateway.create_key("0")
    payload = checkout_event({"metadata": {"account_id": str(gateway.account_id(key)), "credits": "3"}})
    headers = {
        "wrong secret": signature(payload, secret="whsec_someone_else"),
        "tampered body": signature(payload.replace('"3"', '"30"')),
        "stale timestamp": signature(payload, timestamp=int(time.time()) - 3600),
        "no header": "",
        "garbled header": "t=abc,v1",
    }
    assert_refused(deliver(gateway, payload, headers[case]), mentions="Invalid Stripe signature")
    assert gateway.balance(key) == 0
    # The genuine delivery still credits: the refusal recorded nothing.
    assert deliver(gateway, payload).json() == {"received": True, "credited": True}
    assert gateway.balance(key) == 3_000_000


@pytest.mark.parametrize("seconds", [10 * 60, 6 * 60])
def test_a_signature_dated_past_the_tolerance_ahead_is_refused(gateway: Gateway, seconds: int) -> None:
    key = gateway.create_key("0")
    payload = checkout_event({"metadata": {"account_id": str(gateway.account_id(key)), "credits": "3"}})
    ahead = signature(payload, timestamp=int(time.time()) + seconds)
    response = deliver(gateway, payload, ahead)
    assert_refused(response, mentions="Invalid Stripe signature")
    assert "in the future" in response.json()["error"]["message"]
    assert gateway.balance(key) == 0
    assert deliver(gateway, payload).json() == {"received": True, "credited": True}, "the refusal recorded nothing"
    assert gateway.balance(key) == 3_000_000


@pytest.mark.parametrize("seconds", [-4 * 60, 4 * 60])
def test_a_signature_within_the_tolerance_either_way_credits(gateway: Gateway, seconds: int) -> None:
    # Stripe's clock and this host's may differ by a little, either way.
    key = gateway.create_key("0")
    payload = checkout_event({"metadata": {"account_id": str(gateway.account_id(key)), "credits": "2"}})
    response = deliver(gateway, payload, signature(payload, timestamp=int(time.time()) + seconds))
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True, "credited": True}
    assert gateway.balance(key) == 2_000_000


def test_a_signature_ten_minutes_old_is_refused(gateway: Gateway) -> None:
    key = gateway.create_key("0")
    payload = checkout_event({"metadata": {"account_id": str(gateway.account_id(key)), "credits": "3"}})
    stale = deliver(gateway, payload, signature(payload, timestamp=int(time.time()) - 10 * 60))
    assert_refused(stale, mentions="Invalid Stripe signature")
    assert gateway.balance(key) == 0


@pytest.mark.parametrize("field", ["metadata.account_id", "client_reference_id"])
@pytest.mark.parametrize("account_id", [str(2**70), str(2**63), str(2**31), "0",
                                        pytest.param("9" * 5000, id="5000-digits")])
def test_an_account_id_out_of_range_is_refused_and_credits_nothing(gateway: Gateway, field: str,
                                                                   account_id: str) -> None:
    key = gateway.create_key("0")
    session: dict[str, Any] = {"metadata": {"credits": "5"}}
    if field == "metadata.account_id":
        session["metadata"]["account_id"] = account_id
    else:
        session["client_reference_id"] = account_id
    payload = checkout_event(session)
    response = deliver(gateway, payload)
    assert_refused(response, mentions="is not an account id (1 to 2147483647)")
    assert response.json()["error"]["param"] == field
    assert gateway.balance(key) == 0
    # The event id was not recorded: the same event, paid to a real account, still credits it once.
    fixed = json.loads(payload)
    fixed["data"]["object"]["metadata"]["account_id"] = str(gateway.account_id(key))
    fixed["data"]["object"].pop("client_reference_id", None)
    assert deliver(gateway, json.dumps(fixed)).json() == {"received": True, "credited": True}
    assert gateway.balance(key) == 5_000_000
    assert gateway.reconcile(key) == []


@pytest.mark.parametrize("session, mentions", [
    ({"metadata": {"account_id": "{account}", "credits": "1e999999"}}, "must be positive and at most 1000000000"),
    ({"metadata": {"account_id": "{account}", "credits": "1E+999999999"}}, "must be positive and at most"),
    ({"metadata": {"account_id": "{account}", "credits": "1e-999999"}}, "is not an amount"),
    ({"metadata": {"account_id": "{account}", "credits": "9" * 5000}}, "must be positive and at most"),
    ({"metadata": {"account_id": "{account}"}, "amount_total": 2**70, "currency": "usd"}, "must be positive"),
    ({"metadata": {"account_id": "{account}"}, "amount_total": -2**63 - 1, "currency": "usd"}, "must be positive"),
    ({"metadata": {"account_id": "{account}"}, "amount_total": 1.5, "currency": "usd"}, "amount_total"),
])
def test_an_amount_out_of_range_is_refused_and_credits_nothing(gateway: Gateway, session: dict[str, Any],
                                                               mentions: str) -> None:
    key = gateway.create_key("0")
    account = str(gateway.account_id(key))
    session = {**session, "metadata": {name: value.replace("{account}", account)
                                       for name, value in session["metadata"].items()}}
    assert_refused(deliver(gateway, checkout_event(session)), mentions=mentions)
    assert gateway.balance(key) == 0
    assert gateway.reconcile(key) == []


@pytest.mark.parametrize("payload", ["{not json", "[1, 2]", '{"id": "evt_1", "type": "checkout.session.completed"}',
                                     '{"id": "", "type": "x", "data": {"object": {}}}'])
def test_a_signed_but_malformed_event_is_refused(gateway: Gateway, payload: str) -> None:
    assert_refused(deliver(gateway, payload), mentions="Malformed Stripe event")


@pytest.mark.parametrize("session, mentions", [
    ({"metadata": {"account_id": "999999999", "credits": "1"}}, "No account 999999999"),
    ({"metadata": {"credits": "1"}}, "no metadata.account_id"),
    ({"metadata": {"account_id": "abc", "credits": "1"}}, "is not a number"),
    ({"metadata": {"account_id": "{account}", "credits": "-1"}}, "must be positive"),
    ({"metadata": {"account_id": "{account}", "credits": "0"}}, "must be positive"),
    ({"metadata": {"account_id": "{account}", "credits": "lots"}}, "is not an amount"),
    ({"metadata": {"account_id": "{account}", "credits": "Infinity"}}, "is not an amount"),
    ({"metadata": {"account_id": "{account}", "credits": "0.0000001"}}, "is not an amount"),
    ({"metadata": {"account_id": "{account}"}}, "neither metadata.credits nor amount_total"),
    ({"metadata": {"account_id": "{account}"}, "amount_total": 500, "currency": "eur"}, "not usd"),
    ({"metadata": {"account_id": "{account}"}, "amount_total": "many", "currency": "usd"}, "not a checkout session"),
])
def test_an_event_that_cannot_be_credited_is_refused_and_moves_nothing(
    gateway: Gateway, session: dict[str, Any], mentions: str
) -> None:
    key = gateway.create_key("0")
    account = str(gateway.account_id(key))
    session = {**session, "metadata": {name: value.replace("{account}", account)
                                       for name, value in session["metadata"].items()}}
    code = "unknown_account" if mentions.startswith("No account") else "invalid_webhook"
    assert_refused(deliver(gateway, checkout_event(session)), mentions=mentions, code=code)
    assert gateway.balance(key) == 0
    assert gateway.reconcile(key) == []
