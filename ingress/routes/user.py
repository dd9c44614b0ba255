"""The caller's own account: ``GET /user/balance``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from billing.ledger import balance
from ingress.auth import authenticate
from ingress.runtime import Runtime
from schema.money import micros_to_credits

router = APIRouter()


@router.get("/user/balance")
async def user_balance(request: Request) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    owner = await authenticate(request, runtime.engine, request.app.state.key_secret)
    micros = await balance(runtime.engine, owner.account_id)
    return {"account_id": owner.account_id, "balance": micros_to_credits(micros), "balance_micros": micros, "currency": "credits"}
