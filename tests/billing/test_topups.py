"""Which account a Stripe event credits and how much: pure logic."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from billing.topups import TopUp, top_up_of
from schema.errors import InvalidWebhook
from schema.payments import StripeEvent


def event(session: dict[str, Any], type_: str = "checkout.session.completed") -> StripeEvent:
    return StripeEvent.model_validate({"id": "evt_1", "type": type_,
                                       "data": {"object": {"id": "cs_1", "payment_status": "paid", **session}}})


def test_metadata_credits_win_over_the_amount_paid() -> None:
    top_up = top_up_of(event({"metadata": {"account_id": "7", "credits": "12.345678"}, "amount_total": 100,
                              "currency": "usd"}), Decimal("1"))
    assert top_up == TopUp("evt_1", 7, 12_345_678, "stripe checkout.session.completed cs_1")


def test_metadata_account_wins_over_client_reference_id() -> None:
    top_up = top_up_of(event({"metadata": {"account_id": "7", "credits": "1"}, "client_reference_id": "8"}), Decimal(1))
    assert top_up is not None and top_up.account_id == 7


@pytest.mark.parametrize("cents, rate, micros", [
    (500, "1", 5_000_000),
    (1, "1", 10_000),
    (999, "2.5", 24_975_000),
    (1, "0.3333333", 3_333),  # 3333.333 micro-credits round down
])
def test_amount_total_converts_at_credits_per_usd_rounding_down(cents: int, rate: str, micros: int) -> None:
    top_up = top_up_of(event({"client_reference_id": "3", "amount_total": cents, "currency": "USD"}), Decimal(rate))
    assert top_up is not None and top_up.amount == micros


def test_unpaid_sessions_and_other_events_credit_nothing() -> None:
    session = {"client_reference_id": "3", "amount_total": 100, "currency": "usd"}
    assert top_up_of(event({**session, "payment_status": "unpaid"}), Decimal(1)) is None
    assert top_up_of(event(session, "payment_intent.succeeded"), Decimal(1)) is None
    assert top_up_of(event(session, "checkout.session.async_payment_succeeded"), Decimal(1)) is not None


@pytest.mark.parametrize("session", [
    {"client_reference_id": "3", "amount_total": 0, "currency": "usd"},
    {"client_reference_id": "3", "amount_total": 10**15, "currency": "usd"},
    {"client_reference_id": "3", "metadata": {"credits": "1e30"}},
    {"client_reference_id": "3", "metadata": {"credits": "sNaN"}},
    {"client_reference_id": "3", "metadata": {"credits": "-Infinity"}},
    {"client_reference_id": "-3", "metadata": {"credits": "1"}},
    {"client_reference_id": "٣", "metadata": {"credits": "1"}},  # a digit, but not an ASCII one
    {"client_reference_id": "3", "metadata": {"credits": 1}},  # metadata values are strings
    # Out of range, and read as numbers only once in range (no OverflowError, no 4300-digit ValueError).
    {"client_reference_id": "0", "metadata": {"credits": "1"}},
    {"client_reference_id": str(2**31), "metadata": {"credits": "1"}},
    {"client_reference_id": str(2**70), "metadata": {"credits": "1"}},
    {"client_reference_id": "9" * 5000, "metadata": {"credits": "1"}},
    {"metadata": {"account_id": str(2**70), "credits": "1"}, "client_reference_id": "3"},
    {"client_reference_id": "3", "metadata": {"credits": "1e999999"}},
    {"client_reference_id": "3", "metadata": {"credits": "1E+999999999"}},
    {"client_reference_id": "3", "metadata": {"credits": "1e-999999999"}},
    {"client_reference_id": "3", "metadata": {"credits": "9" * 5000}},
    {"client_reference_id": "3", "amount_total": 2**70, "currency": "usd"},
    {"client_reference_id": "3", "amount_total": -1, "currency": "usd"},
])
def test_uncreditable_sessions_are_refused(session: dict[str, Any]) -> None:
    with pytest.raises(InvalidWebhook):
        top_up_of(event(session), Decimal(1))


def test_the_largest_account_id_and_amount_are_credited() -> None:
    top_up = top_up_of(event({"client_reference_id": str(2**31 - 1), "metadata": {"credits": "1000000000"}}),
                       Decimal(1))
    assert top_up is not None and (top_up.account_id, top_up.amount) == (2**31 - 1, 10**15)
    top_up = top_up_of(event({"client_reference_id": "0007", "amount_total": 10**11, "currency": "usd"}), Decimal(1))
    assert top_up is not None and (top_up.account_id, top_up.amount) == (7, 10**15)


def test_an_amount_that_rounds_down_to_nothing_is_refused() -> None:
    with pytest.raises(InvalidWebhook, match="must be positive"):
        top_up_of(event({"client_reference_id": "3", "amount_total": 1, "currency": "usd"}), Decimal("0.00000001"))
