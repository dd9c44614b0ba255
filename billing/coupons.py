"""Coupons: codes an operator creates, each redeemable once per account for a
grant of credits, optionally limited in total redemptions and in time, and
optionally granting credits that expire (free trials).

A redemption is one database transaction: a conditional ``UPDATE`` counts it
against ``max_redemptions`` (concurrent redemptions never exceed it), the
grant's ledger reference ``coupon:<code>:<account>`` makes it once per
account, and a trial coupon records the expiring grant the ledger draws down
and expires. Any refusal rolls the whole transaction back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.ledger import Ledger, user_account
from billing.postings import AVAILABLE, GRANTS, Posting, transact
from billing.statements import insert_ignoring_duplicates
from schema.errors import (
    CouponAlreadyRedeemed,
    CouponExhausted,
    CouponExists,
    CouponExpired,
    CouponNotFound,
    GatewayError,
)
from schema.money import MicroCredits
from schema.tables import coupons, credit_grants, ledger_transactions

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Coupon:
    code: str
    credits: MicroCredits
    max_redemptions: int | None
    redemptions: int
    expires_at: float | None  # unix seconds
    trial_days: int | None


@dataclass(frozen=True, slots=True)
class Redemption:
    code: str
    account_id: int
    credits: MicroCredits
    expires_at: float | None  # when the granted credits expire; None: never


class CouponBook:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def create(
        self,
        code: str,
        credits: MicroCredits,
        *,
        max_redemptions: int | None = None,
        expires_at: float | None = None,
        trial_days: int | None = None,
    ) -> Coupon:
        if credits <= 0:
            raise ValueError(f"a coupon must grant a positive amount, not {credits}")
        async with self.ledger.engine.begin() as connection:
            statement = insert_ignoring_duplicates(connection, coupons, ["code"]).values(
                code=code, credits=credits, max_redemptions=max_redemptions, redemptions=0,
                expires_at=expires_at, trial_days=trial_days,
            )
            if (await connection.execute(statement.returning(coupons.c.code))).first() is None:
                raise CouponExists(f"Coupon {code} already exists", param="code")
        return Coupon(code, credits, max_redemptions, 0, expires_at, trial_days)

    async def get(self, code: str) -> Coupon:
        async with self.ledger.engine.connect() as connection:
            row = await _coupon(connection, code)
        if row is None:
            raise CouponNotFound(f"No coupon {code}", param="code")
        return Coupon(row.code, MicroCredits(row.credits), row.max_redemptions, row.redemptions, row.expires_at,
                      row.trial_days)

    async def redeem(self, code: str, account_id: int, *, now: float | None = None) -> Redemption:
        now = time.time() if now is None else now
        async with self.ledger.engine.begin() as connection:
            count = (
                update(coupons)
                .where(
                    coupons.c.code == code,
                    or_(coupons.c.max_redemptions.is_(None), coupons.c.redemptions < coupons.c.max_redemptions),
                    or_(coupons.c.expires_at.is_(None), coupons.c.expires_at > now),
                )
                .values(redemptions=coupons.c.redemptions + 1)
                .returning(coupons.c.credits, coupons.c.trial_days)
            )
            coupon = (await connection.execute(count)).first()
            if coupon is None:
                raise await _refusal(connection, code, account_id, now)
            await user_account(connection, account_id)
            grants = await self.ledger.system_account(connection, GRANTS)
            granted = await transact(
                connection, "grant", _reference(code, account_id),
                [Posting(account_id, AVAILABLE, coupon.credits),
                 Posting(grants, AVAILABLE, -coupon.credits, system=True)],
                memo=f"coupon {code}",
            )
            if not granted:
                raise CouponAlreadyRedeemed(f"Coupon {code} was already redeemed by this account", param="code")
            expires_at = now + coupon.trial_days * DAY if coupon.trial_days else None
            if expires_at is not None:
                await connection.execute(insert(credit_grants).values(
                    account_id=account_id, amount=coupon.credits, remaining=coupon.credits, expires_at=expires_at,
                    source=f"coupon:{code}",
                ))
        await self.ledger.followed(granted.credit(account_id, coupon.credits))
        return Redemption(code, account_id, MicroCredits(coupon.credits), expires_at)


def _reference(code: str, account_id: int) -> str:
    return f"coupon:{code}:{account_id}"


async def _coupon(connection: AsyncConnection, code: str) -> Row[*tuple[Any, ...]] | None:
    return (await connection.execute(select(coupons).where(coupons.c.code == code))).first()


async def _refusal(connection: AsyncConnection, code: str, account_id: int, now: float) -> GatewayError:
    """Why a coupon could not be counted, most specific reason first."""
    coupon = await _coupon(connection, code)
    if coupon is None:
        return CouponNotFound(f"No coupon {code}", param="code")
    redeemed = select(ledger_transactions.c.id).where(
        ledger_transactions.c.kind == "grant", ledger_transactions.c.reference == _reference(code, account_id)
    )
    if (await connection.execute(redeemed)).first() is not None:
        return CouponAlreadyRedeemed(f"Coupon {code} was already redeemed by this account", param="code")
    if coupon.expires_at is not None and coupon.expires_at <= now:
        return CouponExpired(f"Coupon {code} has expired", param="code")
    return CouponExhausted(f"Coupon {code} has been fully redeemed", param="code")
