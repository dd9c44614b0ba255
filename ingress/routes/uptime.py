"""``GET /health/providers/uptime`` and ``/health/models/uptime``:
availability per time bucket with incidents (``billing.uptime``, from the
rollups), and each provider's circuit now. Public, like
``/health/providers``: counts only, no error messages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from billing.uptime import timeline_object, timelines
from ingress.runtime import Runtime
from schema.monitoring import UptimeQuery

router = APIRouter()


@router.get("/health/providers/uptime")
async def providers_uptime(request: Request, query: Annotated[UptimeQuery, Query()]) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    found = await timelines(runtime.engine, "provider", window=query.window, bucket=query.bucket,
                            threshold=query.threshold)
    names = sorted(runtime.catalog.providers)
    circuits = {health.provider: health.circuit.state for health in await runtime.breakers.health(names)}
    data = []
    for name in sorted(set(names) | set(found)):
        timeline = found.get(name)
        entry = timeline_object(timeline, "provider") if timeline is not None else {
            "provider": name, "requests": 0, "upstream_errors": 0, "uptime": None, "buckets": [], "incidents": []}
        data.append({"object": "provider_uptime", **entry, "circuit": circuits.get(name)})
    return {"object": "list", "window": query.window, "bucket": query.bucket, "threshold": query.threshold,
            "data": data}


@router.get("/health/models/uptime")
async def models_uptime(request: Request, query: Annotated[UptimeQuery, Query()]) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    found = await timelines(runtime.engine, "model", window=query.window, bucket=query.bucket,
                            threshold=query.threshold)
    return {"object": "list", "window": query.window, "bucket": query.bucket, "threshold": query.threshold,
            "data": [{"object": "model_uptime", **timeline_object(timeline, "model")} for timeline in found.values()]}
