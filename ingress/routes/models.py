"""``GET /v1/models``: what is routable, with prices as exact decimal strings
and where each came from (``price_source``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from scheduler.catalog import Catalog, ListedModel
from schema.errors import ModelNotFound

router = APIRouter()


def _model_object(model: ListedModel) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": model.id, "object": "model", "created": 0, "owned_by": model.provider}
    if model.price is not None:
        entry["pricing"] = {
            "input_per_mtok": format(model.price.price.input_per_mtok, "f"),
            "output_per_mtok": format(model.price.price.output_per_mtok, "f"),
            "unit": "credits",
        }
        entry["price_source"] = model.price.source
    spec = model.spec
    if spec is not None:
        entry["providers"] = spec.providers
        entry["context_length"] = spec.context_length
    return entry


@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def list_models(request: Request) -> dict[str, Any]:
    catalog: Catalog = request.app.state.runtime.catalog
    return {"object": "list", "data": [_model_object(model) for model in catalog.models()]}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    catalog: Catalog = request.app.state.runtime.catalog
    model = catalog.find(model_id)
    if model is not None:
        return _model_object(model)
    raise ModelNotFound(f"The model `{model_id}` does not exist", param="model")
