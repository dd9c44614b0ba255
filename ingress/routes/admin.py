"""The operator's API, behind ``GATEWAYZ_ADMIN_TOKEN``: coupons."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from billing.coupons import Coupon
from ingress.auth import authenticate_admin
from ingress.runtime import Runtime
from schema.coupons import NewCoupon, iso_time, normalize_code
from schema.money import micros_to_credits


def _admin(request: Request) -> None:
    # A dependency runs before the body is validated: no token, no details.
    authenticate_admin(request, request.app.state.runtime.settings)


router = APIRouter(prefix="/admin", dependencies=[Depends(_admin)])


def _coupon_object(coupon: Coupon) -> dict[str, Any]:
    return {
        "object": "coupon",
        "code": coupon.code,
        "credits": micros_to_credits(coupon.credits),
        "credits_micros": coupon.credits,
        "max_redemptions": coupon.max_redemptions,
        "redemptions": coupon.redemptions,
        "expires_at": iso_time(coupon.expires_at),
        "trial_days": coupon.trial_days,
    }


@router.post("/coupons", status_code=201)
async def create_coupon(request: Request, body: NewCoupon) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    coupon = await runtime.coupons.create(
        body.code,
        body.credits_micros,
        max_redemptions=body.max_redemptions,
        expires_at=body.expires_at.timestamp() if body.expires_at is not None else None,
        trial_days=body.trial_days,
    )
    return _coupon_object(coupon)


@router.get("/coupons/{code}")
async def get_coupon(request: Request, code: str) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    return _coupon_object(await runtime.coupons.get(normalize_code(code)))
