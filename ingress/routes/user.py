"""The caller's own account: ``GET /user/balance``, ``POST /user/coupons/redeem``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ingress.runtime import Runtime
from schema.coupons import CouponRedemptionRequest, iso_time
from schema.money import micros_to_credits

router = APIRouter()


@router.get("/user/balance")
async def user_balance(request: Request) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    owner = await request.app.state.authenticate(request)
    balance = await runtime.ledger.balance(owner.account_id)
    return {
        "account_id": owner.account_id,
        "currency": "credits",
        "balance": micros_to_credits(balance.total),
        "available": micros_to_credits(balance.available),
        "held": micros_to_credits(balance.held),
        "balance_micros": balance.total,
        "available_micros": balance.available,
        "held_micros": balance.held,
    }


@router.post("/user/coupons/redeem")
async def redeem_coupon(request: Request, body: CouponRedemptionRequest) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    owner = await request.app.state.authenticate(request)
    redemption = await runtime.coupons.redeem(body.code, owner.account_id)
    balance = await runtime.ledger.balance(owner.account_id)
    return {
        "code": redemption.code,
        "credits": micros_to_credits(redemption.credits),
        "credits_micros": redemption.credits,
        "expires_at": iso_time(redemption.expires_at),
        "available": micros_to_credits(balance.available),
        "available_micros": balance.available,
    }
