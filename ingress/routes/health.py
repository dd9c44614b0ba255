"""``GET /health/providers``: each provider's circuit and its models'
circuits, and its recent success rate and latency from client requests
(``requests``) and from the active prober (``probe``; ``count`` 0 when no
prober runs). In distributed mode the state is read from Redis, so every
ingress shows what every worker and prober saw.

Public, like ``/health``, so it shows no error messages (they may quote a
provider); the admin view (``GET /admin/providers/health``) adds them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ingress.runtime import Runtime
from schema.coupons import iso_time
from schema.health import HealthSource
from workers.breakers import CircuitView, ProviderHealth
from workers.health import Activity

router = APIRouter()


def circuit_object(view: CircuitView, *, detailed: bool) -> dict[str, Any]:
    circuit: dict[str, Any] = {
        "state": view.state,
        "failures": view.failures,
        "recent_failures": view.recent_failures,
        "last_error_at": iso_time(view.last_error_at),
        "opened_at": iso_time(view.opened_at),
        "retry_at": iso_time(view.retry_at),
    }
    if detailed:
        circuit["last_error"] = view.last_error
    return circuit


def _milliseconds(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def activity_object(activity: Activity, *, detailed: bool) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "count": activity.count,
        "success_rate": activity.success_rate,
        "latency_ms": {"p50": _milliseconds(activity.latency_p50), "p95": _milliseconds(activity.latency_p95)},
        "last_at": iso_time(activity.last_at),
        "last_ok": activity.last_ok,
    }
    if detailed:
        summary["last_error"] = activity.last_error
    return summary


def health_object(health: ProviderHealth, activity: dict[HealthSource, Activity], *,
                  detailed: bool = False) -> dict[str, Any]:
    return {
        "object": "provider_health",
        "provider": health.provider,
        "status": health.status,
        "circuit": circuit_object(health.circuit, detailed=detailed),
        "models": [{"model": model, "circuit": circuit_object(view, detailed=detailed)}
                   for model, view in health.models.items()],
        **{source: activity_object(summary, detailed=detailed) for source, summary in activity.items()},
    }


async def providers_health(runtime: Runtime, *, detailed: bool, only: str | None = None) -> dict[str, Any]:
    providers = [only] if only is not None else sorted(runtime.catalog.providers)
    report = await runtime.breakers.health(providers)
    activity = await runtime.health.report(providers)
    return {"object": "list", "data": [health_object(health, activity[health.provider], detailed=detailed)
                                       for health in report]}


@router.get("/health/providers")
async def health_of_providers(request: Request) -> dict[str, Any]:
    return await providers_health(request.app.state.runtime, detailed=False)
