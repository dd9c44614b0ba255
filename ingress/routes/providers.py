"""``GET /v1/provider`` (also ``/v1/providers``): each provider the gateway
knows, enabled ones first with the models routable through them and their
status, then disabled ones with what would enable them.

It takes an API key, unlike ``/v1/models``: base URLs can name internal
hosts or cloud accounts. Whether a key is configured is shown as a boolean;
the key itself never is.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from scheduler.catalog import Catalog
from scheduler.listings import ListingStatus, ProviderListing
from schema.catalog import DisabledProvider, ProviderSpec
from schema.coupons import iso_time

router = APIRouter()


def provider_status(listing: ProviderListing | None) -> ListingStatus:
    """``unknown`` until its model list was refreshed, then ``ok`` or
    ``error`` as the last refresh went. The circuit breaker's state joins
    here when breakers exist: an open circuit is the status that matters."""
    return listing.status if listing is not None else "unknown"


def _described(spec: ProviderSpec) -> dict[str, Any]:
    return {
        "object": "provider",
        "name": spec.name,
        "adapter": spec.adapter,
        "base_url": spec.base_url,
        "auth": spec.auth,
        "verified": spec.verified,  # false: base URL or auth style not confirmed by the provider's docs
        "notes": spec.notes,
    }


def provider_object(catalog: Catalog, spec: ProviderSpec) -> dict[str, Any]:
    listing = catalog.listings.get(spec.name)
    models = [model.id for model in catalog.provider_models(spec.name)]
    return {
        **_described(spec),
        "enabled": True,
        "disabled_reason": None,
        "key_configured": spec.api_key is not None,
        "models": models,
        "model_count": len(models),
        "last_refresh": None if listing is None or listing.refreshed_at is None else {
            "at": iso_time(listing.refreshed_at),
            "status": listing.status,
            "error": listing.error,
            "listed_at": iso_time(listing.listed_at),
            "listed": len(listing.models),
        },
        "status": provider_status(listing),
    }


def disabled_object(disabled: DisabledProvider) -> dict[str, Any]:
    """A disabled provider serves nothing and is never refreshed; its base
    URL is shown as configured (placeholders unfilled)."""
    return {
        **_described(disabled.spec),
        "enabled": False,
        "disabled_reason": disabled.reason,
        "key_configured": disabled.spec.api_key is not None,
        "models": [],
        "model_count": 0,
        "last_refresh": None,
        "status": "disabled",
    }


@router.get("/v1/provider")
@router.get("/v1/providers")
async def list_providers(request: Request) -> dict[str, Any]:
    await request.app.state.authenticate(request)
    catalog: Catalog = request.app.state.runtime.catalog
    enabled = [provider_object(catalog, spec) for spec in catalog.providers.values()]
    disabled = [disabled_object(off) for off in catalog.config.disabled_providers.values()]
    return {"object": "list", "data": enabled + disabled}
