"""Public views of real usage, from the rollups: ``GET /v1/models/trending``
(busiest models over a window), ``/v1/models/low-latency`` (fastest by
measured time to first token, or by output throughput) and
``/v1/gateways/summary`` (the gateway's providers, models and traffic).
They show traffic counts and timings, never accounts or money."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from billing.usage_stats import totals
from ingress.runtime import Runtime
from schema.monitoring import LatencyRankingQuery, RankingQuery

router = APIRouter()


@router.get("/v1/models/trending")
async def trending_models(request: Request, query: Annotated[RankingQuery, Query()]) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    rows = await totals(runtime.engine, since=time.time() - query.window, by=("model",))
    rows.sort(key=lambda row: (-row["requests"], row.group["model"]))
    return {"object": "list", "window": query.window, "data": [
        {"object": "model_usage", "id": row.group["model"], "requests": row["requests"],
         "input_tokens": row["input_tokens"], "output_tokens": row["output_tokens"],
         "tokens": row["input_tokens"] + row["output_tokens"]} for row in rows[:query.limit]]}


@router.get("/v1/models/low-latency")
async def low_latency_models(request: Request, query: Annotated[LatencyRankingQuery, Query()]) -> dict[str, Any]:
    """``ttft``: lowest mean time to first token first; ``throughput``: most
    output tokens per second of request time first."""
    runtime: Runtime = request.app.state.runtime
    rows = [row for row in await totals(runtime.engine, since=time.time() - query.window, by=("model",))
            if row["timed"] >= query.min_requests and row["first_tokens"]]
    if query.sort == "ttft":
        rows.sort(key=lambda row: (row.mean_ttft_ms or 0.0, row.group["model"]))
    else:
        rows.sort(key=lambda row: (-(row.tokens_per_second or 0.0), row.group["model"]))
    return {"object": "list", "window": query.window, "sort": query.sort, "data": [
        {"object": "model_latency", "id": row.group["model"], "requests": row["timed"],
         "ttft_ms": row.mean_ttft_ms, "latency_ms": {"mean": row.mean_latency_ms,
                                                     "p50": row.latency_percentile(0.5),
                                                     "p95": row.latency_percentile(0.95)},
         "tokens_per_second": row.tokens_per_second} for row in rows[:query.limit]]}


@router.get("/v1/gateways/summary")
async def gateway_summary(request: Request, query: Annotated[RankingQuery, Query()]) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    catalog = runtime.catalog
    names = sorted(catalog.providers)
    report = await runtime.breakers.health(names)
    (total,) = await totals(runtime.engine, since=time.time() - query.window)
    return {
        "object": "gateway_summary",
        "window": query.window,
        "providers": [{"provider": health.provider, "status": health.status} for health in report],
        "models": len(catalog.models()),
        "requests": total["requests"],
        "errors": total["errors"],
        "availability": total.availability,
        "input_tokens": total["input_tokens"],
        "output_tokens": total["output_tokens"],
        "latency_ms": {"p50": total.latency_percentile(0.5), "p95": total.latency_percentile(0.95)},
    }
