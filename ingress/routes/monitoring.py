"""The monitoring API (``/api/monitoring/…``), behind the admin token:
realtime totals, error rates, cost analysis, anomalies (from the rollups
settlement keeps, ``billing.usage_stats``) and the request log (the usage
records, ``billing.request_log``). Money is in micro-credits (``*_micros``)
and as a credits string."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import text

from billing import request_log
from billing.anomalies import RULE, anomalies, anomaly_object
from billing.history import Page
from billing.request_log import LogFilter
from billing.usage_stats import summary, totals
from ingress.auth import authenticate_admin
from ingress.runtime import Runtime
from schema.coupons import iso_time
from schema.money import micros_to_credits
from schema.monitoring import AnomalyQuery, CostQuery, RequestLogQuery, WindowQuery


def _admin(request: Request) -> None:
    authenticate_admin(request, request.app.state.runtime.settings)


router = APIRouter(prefix="/api/monitoring", dependencies=[Depends(_admin)])


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.get("/health")
async def monitoring_health(request: Request) -> dict[str, Any]:
    """``ok`` when the database answers and no provider's circuit is open;
    ``degraded`` when some circuit is; with the age of the newest rollup
    minute (how recently anything settled)."""
    runtime = _runtime(request)
    started = time.monotonic()
    async with runtime.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    database_ms = round((time.monotonic() - started) * 1000, 1)
    report = await runtime.breakers.health(sorted(runtime.catalog.providers))
    down = [health.provider for health in report if health.status == "down"]
    latest = await totals(runtime.engine, since=time.time() - 3600, by=("bucket",))
    return {
        "object": "monitoring_health",
        "status": "degraded" if down else "ok",
        "database": {"status": "ok", "latency_ms": database_ms},
        "providers": {"total": len(report), "down": down},
        "last_settled_minute": iso_time(latest[-1].group["bucket"]) if latest else None,
    }


@router.get("/stats/realtime")
async def realtime(request: Request) -> dict[str, Any]:
    """Totals of the last minute and the last hour (minute-granular)."""
    engine, now = _runtime(request).engine, time.time()
    (minute,), (hour,) = (await totals(engine, since=now - 60), await totals(engine, since=now - 3600))
    return {"object": "realtime_stats", "generated_at": iso_time(now),
            "last_minute": summary(minute), "last_hour": summary(hour)}


@router.get("/stats/timeseries")
async def timeseries(request: Request, query: Annotated[WindowQuery, Query()]) -> dict[str, Any]:
    """Per minute over the window (the operator page's sparklines); idle minutes are left out."""
    rows = await totals(_runtime(request).engine, since=time.time() - query.window, by=("bucket",))
    return {"object": "list", "data": [{"minute": iso_time(row.group["bucket"]), **summary(row)} for row in rows]}


@router.get("/error-rates")
async def error_rates(request: Request, query: Annotated[WindowQuery, Query()]) -> dict[str, Any]:
    rows = await totals(_runtime(request).engine, since=time.time() - query.window, by=("provider", "model"))
    return {"object": "list", "window": query.window, "data": [
        {"provider": row.group["provider"], "model": row.group["model"], "requests": row["requests"],
         "errors": row["errors"], "upstream_errors": row["upstream_errors"], "error_rate": row.error_rate}
        for row in rows]}


@router.get("/cost-analysis")
async def cost_analysis(request: Request, query: Annotated[CostQuery, Query()]) -> dict[str, Any]:
    """Cost per UTC day, provider, model and account, and its totals along each."""
    rows = await totals(_runtime(request).engine, since=time.time() - query.window,
                        by=("bucket", "provider", "model", "account_id"), bucket_seconds=86400,
                        where={"provider": query.provider, "model": query.model, "account_id": query.account_id})
    along: dict[str, dict[str, int]] = {"day": {}, "provider": {}, "model": {}, "account_id": {}}
    data = []
    for row in rows:
        day = (iso_time(row.group["bucket"]) or "")[:10]
        for name, value in (("day", day), ("provider", row.group["provider"]), ("model", row.group["model"]),
                            ("account_id", str(row.group["account_id"]))):
            along[name][value] = along[name].get(value, 0) + row["cost"]
        data.append({"day": day, "provider": row.group["provider"], "model": row.group["model"],
                     "account_id": row.group["account_id"], "requests": row["requests"],
                     "input_tokens": row["input_tokens"], "output_tokens": row["output_tokens"],
                     "cost_micros": row["cost"], "cost": micros_to_credits(row["cost"])})
    total = sum(row["cost"] for row in rows)
    return {"object": "cost_analysis", "window": query.window, "total_micros": total,
            "total": micros_to_credits(total), "data": data,
            "by": {name: [{name: key, "cost_micros": cost, "cost": micros_to_credits(cost)}
                          for key, cost in sorted(costs.items(), key=lambda item: -item[1])]
                   for name, costs in along.items()}}


def _log_filter(query: RequestLogQuery) -> LogFilter:
    return LogFilter(since=time.time() - query.window, provider=query.provider, model=query.model,
                     account_id=query.account_id, key_id=query.key_id, outcome=query.outcome)


@router.get("/chat-requests")
async def chat_requests(request: Request, query: Annotated[RequestLogQuery, Query()]) -> dict[str, Any]:
    """The settled requests, newest first. Request bodies are not stored
    (``billing.request_log``): each entry is what settlement recorded."""
    page = await request_log.requests(_runtime(request).engine, _log_filter(query),
                                      Page(query.limit, query.cursor_id, query.offset))
    return {"object": "list", "bodies_stored": False, "has_more": page.next_cursor is not None,
            "next_cursor": str(page.next_cursor) if page.next_cursor is not None else None,
            "data": [_request_object(row) for row in page.rows]}


def _request_object(row: dict[str, Any]) -> dict[str, Any]:
    cost = row.pop("cost")
    return {"object": "chat_request", **row, "finished_at": iso_time(row["finished_at"]), "cost_micros": cost,
            "cost": micros_to_credits(cost), "ok": (row["status"] or 200) < 400}


@router.get("/chat-requests/counts")
async def chat_request_counts(request: Request, query: Annotated[RequestLogQuery, Query()]) -> dict[str, Any]:
    return {"object": "chat_request_counts", **await request_log.counts(_runtime(request).engine, _log_filter(query))}


@router.get("/chat-requests/models")
async def chat_request_models(request: Request, query: Annotated[RequestLogQuery, Query()]) -> dict[str, Any]:
    models = await request_log.models(_runtime(request).engine, _log_filter(query))
    return {"object": "list", "data": [{**model, "last_at": iso_time(model["last_at"])} for model in models]}


@router.get("/anomalies")
async def get_anomalies(request: Request, query: Annotated[AnomalyQuery, Query()]) -> dict[str, Any]:
    """Models whose error rate or latency is far off their baseline; ``rule`` says how far."""
    found = await anomalies(_runtime(request).engine, recent=query.recent, baseline=query.baseline,
                            min_requests=query.min_requests)
    return {"object": "list", "rule": RULE, "recent": query.recent, "baseline": query.baseline,
            "data": [anomaly_object(anomaly) for anomaly in found]}
