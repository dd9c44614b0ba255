"""Operator adjustments: credits an operator adds to or deducts from a user
account by hand, each a balanced ``adjustment`` transaction against
``system:adjustments`` whose memo is the operator's reason.

An idempotency key makes a retried request a no-op: the ledger's unique
``(kind, reference)`` lets one transaction per key through, and a replay
answers with the first one. A deduction is spent like a charge (expiring
trial credit first) and may not take the account's available credit below
zero; a refusal moves nothing.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.history import as_utc
from billing.ledger import Ledger
from billing.postings import AVAILABLE, Posting, draw_down_grants, transact
from schema.errors import AccountNotFound, DeductionExceedsAvailable, IdempotencyKeyReused
from schema.money import micros_to_credits
from schema.tables import accounts, ledger_entries, ledger_transactions

ADJUSTMENTS = "system:adjustments"


@dataclass(frozen=True, slots=True)
class Adjustment:
    transaction_id: int
    reference: str
    account_id: int
    amount: int  # micro-credits; negative: a deduction
    reason: str
    created_at: datetime
    applied: bool  # False: a replay of an earlier request with the same idempotency key
    available: int  # the account's available credit now


class _Replayed(Exception):
    """A concurrent request with the same idempotency key committed first."""


async def adjust_credits(ledger: Ledger, account_id: int, amount: int, reason: str, *,
                         idempotency_key: str | None = None) -> Adjustment:
    if not amount:
        raise ValueError("an adjustment must move credits")
    reference = f"admin:{idempotency_key or uuid.uuid4().hex}"
    try:
        async with ledger.engine.begin() as connection:
            previous = await _replay(connection, reference, account_id, amount, reason)
            if previous is not None:
                return previous
            if (await connection.execute(select(accounts.c.id).where(
                    accounts.c.id == account_id, accounts.c.kind == "user"))).first() is None:
                raise AccountNotFound(f"No user account {account_id}")
            if amount < 0:
                # Lock order: credit grants before the account (as settlement).
                await draw_down_grants(connection, {account_id: -amount}, time.time())
            available = (await connection.execute(
                select(accounts.c.available).where(accounts.c.id == account_id).with_for_update()
            )).scalar_one()
            if available + amount < 0:
                raise DeductionExceedsAvailable(
                    f"Deducting {micros_to_credits(-amount)} credits would take account {account_id} below zero: "
                    f"it has {micros_to_credits(available)} available", param="amount"
                )
            system = await ledger.system_account(connection, ADJUSTMENTS)
            postings = [Posting(account_id, AVAILABLE, amount), Posting(system, AVAILABLE, -amount, system=True)]
            posted = await transact(connection, "adjustment", reference, postings, memo=reason)
            if not posted:
                raise _Replayed  # rolls back the grants drawn down above
            adjustment = await _adjustment(connection, reference, applied=True)
        assert adjustment is not None, "written by this transaction"
        await ledger.followed(posted.credit(account_id, amount))
        return adjustment
    except _Replayed:
        async with ledger.engine.connect() as connection:
            replayed = await _replay(connection, reference, account_id, amount, reason)
        assert replayed is not None, "its reference is taken: the adjustment exists"
        return replayed


async def _replay(connection: AsyncConnection, reference: str, account_id: int, amount: int,
                  reason: str) -> Adjustment | None:
    """The adjustment already made under ``reference``, if the same request made it."""
    previous = await _adjustment(connection, reference, applied=False)
    if previous is not None and (previous.account_id, previous.amount, previous.reason) != (account_id, amount, reason):
        raise IdempotencyKeyReused(
            "This idempotency key was already used for a different adjustment "
            f"({micros_to_credits(previous.amount)} credits to account {previous.account_id})",
            param="idempotency_key",
        )
    return previous


async def _adjustment(connection: AsyncConnection, reference: str, *, applied: bool) -> Adjustment | None:
    transaction = (await connection.execute(
        select(ledger_transactions.c.id, ledger_transactions.c.memo, ledger_transactions.c.created_at)
        .where(ledger_transactions.c.kind == "adjustment", ledger_transactions.c.reference == reference)
    )).first()
    if transaction is None:
        return None
    entry = (await connection.execute(
        select(ledger_entries.c.account_id, ledger_entries.c.amount)
        .join(accounts, accounts.c.id == ledger_entries.c.account_id)
        .where(ledger_entries.c.transaction_id == transaction.id, accounts.c.kind == "user")
    )).one()
    available = (await connection.execute(
        select(accounts.c.available).where(accounts.c.id == entry.account_id)
    )).scalar_one()
    return Adjustment(transaction.id, reference, entry.account_id, int(entry.amount), transaction.memo or "",
                      as_utc(transaction.created_at), applied, int(available))
