"""The operator's API, behind ``GATEWAYZ_ADMIN_TOKEN``: coupons, credit
adjustments, an account's ledger, API keys (limits, expiry, plan,
revocation), refreshing providers' model lists, the providers'
circuit breakers (health, reset), and their worker pools (``/admin/pools``)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from billing.adjustments import adjust_credits
from billing.coupons import Coupon
from billing.history import Page, ledger_statement
from billing.keys import KeyRecord, change_key, key_record
from ingress.auth import authenticate_admin
from ingress.catalog_refresh import CatalogRefresher, RefreshReport
from ingress.routes.health import providers_health
from ingress.runtime import Runtime
from scheduler.admission import READ_LIMIT, PoolView
from scheduler.priority import MESSAGE_PRIORITY
from schema.accounts import MAX_ID, CreditAdjustment, PageQuery
from schema.coupons import NewCoupon, iso_time, normalize_code
from schema.errors import ProviderNotFound
from schema.keys import KeyChange
from schema.money import micros_to_credits

# Anything but a 32-bit database id is refused before it reaches a query.
DatabaseId = Annotated[int, Path(ge=1, le=MAX_ID)]


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


@router.post("/accounts/{account_id}/credits", status_code=201)
async def adjust_account_credits(request: Request, response: Response, account_id: DatabaseId,
                                 body: CreditAdjustment) -> dict[str, Any]:
    """Add (or, with a negative amount, deduct) credits; 201 when applied,
    200 when the idempotency key replays an earlier adjustment."""
    runtime: Runtime = request.app.state.runtime
    adjustment = await adjust_credits(runtime.ledger, account_id, body.amount_micros, body.reason,
                                      idempotency_key=body.idempotency_key)
    if not adjustment.applied:
        response.status_code = 200
    return {
        "object": "credit_adjustment",
        "id": adjustment.transaction_id,
        "reference": adjustment.reference,
        "account_id": adjustment.account_id,
        "amount": micros_to_credits(adjustment.amount),
        "amount_micros": adjustment.amount,
        "reason": adjustment.reason,
        "created_at": adjustment.created_at.isoformat(),
        "applied": adjustment.applied,
        "available": micros_to_credits(adjustment.available),
        "available_micros": adjustment.available,
    }


@router.get("/accounts/{account_id}/ledger")
async def account_ledger(request: Request, account_id: DatabaseId,
                         query: Annotated[PageQuery, Query()]) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    statement = await ledger_statement(runtime.engine, account_id, Page(query.limit, query.cursor_id, query.offset))
    entries = [
        {
            "id": entry.id,
            "transaction_id": entry.transaction_id,
            "kind": entry.kind,
            "reference": entry.reference,
            "memo": entry.memo,
            "bucket": entry.bucket,
            "amount": micros_to_credits(entry.amount),
            "amount_micros": entry.amount,
            "created_at": entry.created_at.isoformat(),
        }
        for entry in statement.entries
    ]
    return {
        "object": "list",
        "account_id": account_id,
        "data": entries,
        "has_more": statement.next_cursor is not None,
        "next_cursor": str(statement.next_cursor) if statement.next_cursor is not None else None,
    }


def _key_object(key: KeyRecord) -> dict[str, Any]:
    def credits(micros: int | None) -> str | None:
        return micros_to_credits(micros) if micros is not None else None

    return {
        "object": "api_key",
        "id": key.id,
        "account_id": key.account_id,
        "name": key.name,
        "prefix": key.prefix,
        "created_at": key.created_at.isoformat(),
        "expires_at": iso_time(key.expires_at),
        "revoked": key.revoked_at is not None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
        "plan": key.plan,  # null: the config's default plan
        "limits": {"daily": credits(key.limits.daily), "monthly": credits(key.limits.monthly),
                   "total": credits(key.limits.total)},
        # Counted (settled plus held) only while the key has a limit.
        "spend": {kind: credits(amount) for kind, amount in key.spend.items()} if key.spend is not None else None,
    }


@router.get("/keys/{key_id}")
async def get_key(request: Request, key_id: DatabaseId) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    return _key_object(await key_record(runtime.engine, key_id))


@router.patch("/keys/{key_id}")
async def update_key(request: Request, key_id: DatabaseId, body: KeyChange) -> dict[str, Any]:
    """Set limits, expiry or plan (``null`` clears one) or revoke. Admission
    sees a limit, expiry or revocation at once in every process; other
    ingress processes may still authenticate a revoked key for up to 10 s
    (their key cache), though it can no longer spend, and apply its old plan
    for as long."""
    runtime: Runtime = request.app.state.runtime
    if "plan" in body.model_fields_set:
        runtime.rate_limits.check_plan(body.plan)
    key = await change_key(runtime.engine, key_id, body.values(), revoke=bool(body.revoked))
    await runtime.balances.forget_key(key_id)  # its next hold reloads it: every process's, in Redis
    request.app.state.authenticate.forget(key_id)
    return _key_object(key)


def _refresh_object(report: RefreshReport) -> dict[str, Any]:
    return {
        "object": "provider_refresh",
        "refreshed_at": iso_time(report.refreshed_at),
        "models": report.models,
        "persisted": report.persisted,
        "data": [
            {
                "provider": part.provider,
                "status": part.status,
                "error": part.error,
                "listed": part.listed,
                "added": part.added,
                "removed": part.removed,
                "unpriced": part.unpriced,
                "count": part.count,
                "listed_at": iso_time(part.listed_at),
            }
            for part in report.providers
        ],
    }


@router.post("/refresh-providers")
async def refresh_providers(request: Request,
                            provider: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
    """Fetch enabled providers' own model lists (all, or ``?provider=``) and
    serve what they add; a provider that fails keeps its last good list."""
    refresher: CatalogRefresher = request.app.state.catalog_refresh
    return _refresh_object(await refresher.refresh(provider))


@router.get("/providers/health")
async def get_providers_health(request: Request) -> dict[str, Any]:
    """Every provider's circuits, with their last error messages."""
    return await providers_health(request.app.state.runtime, detailed=True)


@router.post("/providers/{provider}/reset")
async def reset_provider_circuits(request: Request, provider: str) -> dict[str, Any]:
    """Close the provider's circuit and its models': the next jobs call it again."""
    runtime: Runtime = request.app.state.runtime
    if provider not in runtime.catalog.providers:
        raise ProviderNotFound(f"No provider {provider!r}")
    await runtime.breakers.reset(provider)
    runtime.circuits.forget_provider(provider)
    entry: dict[str, Any]
    (entry,) = (await providers_health(runtime, detailed=True, only=provider))["data"]
    return entry


def _pool_object(runtime: Runtime, view: PoolView, circuit: str) -> dict[str, Any]:
    service_time = view.service_time
    return {
        "object": "pool",
        "provider": view.provider,
        "depth": view.total_depth,
        # Message priority -> waiting jobs; classes: realtime 4, standard 2, bulk 1, batch 0.
        "depth_by_priority": {str(level): view.depth.get(level, 0) for level in sorted(range(5), reverse=True)},
        "consumers": view.consumers,
        "concurrency": view.concurrency,
        "in_flight": view.in_flight,
        "service_rate": round(view.service_rate, 3),
        "service_time": round(service_time, 3) if service_time is not None else None,
        "estimated_wait": {name: round(wait, 3) if wait is not None else None
                           for name, wait in runtime.pools.estimates(view, MESSAGE_PRIORITY).items()},
        "circuit": circuit,
        "workers": [{"worker": worker.worker, "concurrency": worker.concurrency, "in_flight": worker.in_flight,
                     "completed": worker.completed, "service_rate": round(worker.service_rate, 3)}
                    for worker in view.workers],
        "last_seen": iso_time(view.last_seen),
    }


@router.get("/pools")
async def get_pools(request: Request, provider: str | None = None) -> dict[str, Any]:
    """Every provider's worker pool as every process sees it: waiting jobs by
    priority, workers, jobs in hand, service rate, estimated queue wait per
    class (seconds; null: no worker serves it) and circuit state."""
    runtime: Runtime = request.app.state.runtime
    names = sorted(runtime.catalog.providers)
    if provider is not None:
        if provider not in runtime.catalog.providers:
            raise ProviderNotFound(f"No provider {provider!r}")
        names = [provider]
    # An operator's view waits for a slow read (a loaded broker) as long as the read may last;
    # only a request's admission is held to the short budget.
    views = await asyncio.gather(*(runtime.pools.view(name, max_age=0, read_timeout=READ_LIMIT)
                                   for name in names))
    health = {report.provider: report.circuit.state for report in await runtime.breakers.health(names)}
    return {"object": "list", "data": [_pool_object(runtime, view, health[view.provider]) for view in views]}
