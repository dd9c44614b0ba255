"""``GET /health/providers``: each provider's circuit and its models'
circuits, passive health from request outcomes. In distributed mode the
state is read from Redis, so every ingress shows what every worker saw.

Public, like ``/health``, so it shows no error messages (they may quote a
provider); the admin view (``GET /admin/providers/health``) adds them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ingress.runtime import Runtime
from schema.coupons import iso_time
from workers.breakers import CircuitView, ProviderHealth

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


def health_object(health: ProviderHealth, *, detailed: bool = False) -> dict[str, Any]:
    return {
        "object": "provider_health",
        "provider": health.provider,
        "status": health.status,
        "circuit": circuit_object(health.circuit, detailed=detailed),
        "models": [{"model": model, "circuit": circuit_object(view, detailed=detailed)}
                   for model, view in health.models.items()],
    }


async def providers_health(runtime: Runtime, *, detailed: bool) -> dict[str, Any]:
    report = await runtime.breakers.health(sorted(runtime.catalog.providers))
    return {"object": "list", "data": [health_object(health, detailed=detailed) for health in report]}


@router.get("/health/providers")
async def health_of_providers(request: Request) -> dict[str, Any]:
    return await providers_health(request.app.state.runtime, detailed=False)
