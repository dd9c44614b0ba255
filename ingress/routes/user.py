"""The caller's own account: ``GET /user/balance``, ``GET /user/usage``,
``POST /user/coupons/redeem``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from billing.history import Page, UsageFilter, UsageTotal, usage_report
from billing.ledger import KeyOwner
from ingress.runtime import Runtime
from schema.accounts import UsageQuery
from schema.coupons import CouponRedemptionRequest, iso_time
from schema.money import micros_to_credits

router = APIRouter()


async def _caller(request: Request) -> KeyOwner:
    # A dependency runs before the query is validated: no key, no details.
    owner: KeyOwner = await request.app.state.authenticate(request)
    return owner


@router.get("/user/balance")
async def user_balance(request: Request) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    owner = await request.app.state.authenticate(request)
    balance = await runtime.balances.balance(owner.account_id)
    return {
        "account_id": owner.account_id,
        "key_id": owner.key_id,
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
    balance = await runtime.balances.balance(owner.account_id)
    return {
        "code": redemption.code,
        "credits": micros_to_credits(redemption.credits),
        "credits_micros": redemption.credits,
        "expires_at": iso_time(redemption.expires_at),
        "available": micros_to_credits(balance.available),
        "available_micros": balance.available,
    }


@router.get("/user/usage")
async def user_usage(
    request: Request, owner: Annotated[KeyOwner, Depends(_caller)], query: Annotated[UsageQuery, Query()]
) -> dict[str, Any]:
    """The account's settled requests, newest first, with totals over every
    request the filters match (not only this page)."""
    runtime: Runtime = request.app.state.runtime
    report = await usage_report(
        runtime.engine,
        owner.account_id,
        UsageFilter(start=query.start, end=query.end, model=query.model, key_id=query.key_id,
                    batch_id=query.batch_id),
        Page(query.limit, query.cursor_id, query.offset),
    )
    rows = [
        {
            "job_id": row.job_id,
            "created_at": row.created_at.isoformat(),
            "key_id": row.key_id,
            "provider": row.provider,
            "model": row.model,
            "input_tokens": row.input_tokens,
            "output_tokens": row.output_tokens,
            "images": row.images,
            "reported": row.reported,
            "cost": micros_to_credits(row.cost),
            "cost_micros": row.cost,
            "batch_id": row.batch_id,
        }
        for row in report.rows
    ]
    return {
        "object": "list",
        "data": rows,
        "has_more": report.next_cursor is not None,
        "next_cursor": str(report.next_cursor) if report.next_cursor is not None else None,
        "totals": {
            **_sums(report.total),
            "by_model": [{"model": total.group, **_sums(total)} for total in report.by_model],
            "by_day": [{"day": total.group, **_sums(total)} for total in report.by_day],
        },
    }


def _sums(total: UsageTotal) -> dict[str, Any]:
    return {
        "requests": total.requests,
        "input_tokens": total.input_tokens,
        "output_tokens": total.output_tokens,
        "images": total.images,
        "cost": micros_to_credits(total.cost),
        "cost_micros": total.cost,
    }
