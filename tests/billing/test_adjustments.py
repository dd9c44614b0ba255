"""Operator adjustments on both databases: a deduction is spent like a charge
(trial credit first), so an expiring trial never takes back credit the
account paid for."""

from __future__ import annotations

import time
import uuid

from billing.adjustments import adjust_credits
from billing.coupons import CouponBook
from billing.ledger import Ledger

DAY = 86_400


async def test_a_deduction_spends_trial_credit_first(ledger: Ledger) -> None:
    account_id = await ledger.create_account("t", 1000)  # type: ignore[arg-type]
    code = f"T{uuid.uuid4().hex[:12]}".upper()
    book = CouponBook(ledger)
    await book.create(code, 300, trial_days=1)  # type: ignore[arg-type]
    await book.redeem(code, account_id)
    deducted = await adjust_credits(ledger, account_id, -100, "trial abuse")
    assert (deducted.applied, deducted.available) == (True, 1200)
    assert await ledger.expire_grants(time.time() + 2 * DAY) == 1
    assert (await ledger.balance(account_id)).available == 1000, "the paid-for credit is whole"
    assert await ledger.reconcile() == []


async def test_a_replay_is_answered_even_once_the_credit_is_spent(ledger: Ledger) -> None:
    account_id = await ledger.create_account("t", 0)  # type: ignore[arg-type]
    first = await adjust_credits(ledger, account_id, 500, "grant", idempotency_key="once")
    await adjust_credits(ledger, account_id, -500, "spent")
    replay = await adjust_credits(ledger, account_id, 500, "grant", idempotency_key="once")
    assert (replay.applied, replay.transaction_id, replay.available) == (False, first.transaction_id, 0)
    assert await ledger.reconcile() == []
