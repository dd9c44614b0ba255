"""``GET /v1/models``, ``GET /v1/models/search``, ``GET /v1/models/{id}``:
what is routable, in OpenAI's model shape plus the gateway's fields — prices
as exact decimal strings and where each came from (``price_source``),
context length, kind, input modalities and the candidate providers in order.

Searching is the catalog's (``Catalog.search``); this module parses the
query. ``/v1/models/search`` is declared before ``/v1/models/{id}``, whose
ids may contain ``/``, so that it is never read as a model id.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from scheduler.catalog import MAX_QUERY_LENGTH, Catalog, ListedModel, ModelQuery
from schema.errors import InvalidRequest, ModelNotFound

router = APIRouter()

SEARCH_PARAMETERS = ("q", "provider", "modality", "max_input_price", "max_output_price", "min_context_length")


def model_object(model: ListedModel) -> dict[str, Any]:
    about = model.about
    entry: dict[str, Any] = {
        "id": model.id,
        "object": "model",
        "created": about.created if about is not None and about.created is not None else 0,
        "owned_by": model.provider,
        "name": model.name,
        "description": model.description,
    }
    if model.price is not None:
        entry["pricing"] = {
            "input_per_mtok": format(model.price.price.input_per_mtok, "f"),
            "output_per_mtok": format(model.price.price.output_per_mtok, "f"),
            "unit": "credits",
        }
        if model.price.price.per_image:
            entry["pricing"]["per_image"] = format(model.price.price.per_image, "f")
        entry["price_source"] = model.price.source
    entry.update({
        "context_length": model.context_length,
        "max_output_tokens": model.max_output_tokens,
        "kind": model.kind,
        "modalities": model.modalities,
        "providers": list(model.providers),
    })
    return entry


def _catalog(request: Request) -> Catalog:
    # Read once per request: a refresh swaps the runtime's catalog whole.
    catalog: Catalog = request.app.state.runtime.catalog
    return catalog


@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(model) for model in _catalog(request).models()]}


@router.get("/v1/models/search")
async def search_models(
    request: Request,
    q: Annotated[str | None, Query(max_length=MAX_QUERY_LENGTH)] = None,
    provider: str | None = None,
    modality: str | None = None,
    max_input_price: Decimal | None = None,
    max_output_price: Decimal | None = None,
    min_context_length: int | None = None,
) -> dict[str, Any]:
    """Every criterion given must hold; see ``Catalog.search`` for the order."""
    unknown = sorted(set(request.query_params) - set(SEARCH_PARAMETERS))
    if unknown:
        # A misspelt filter would otherwise silently match everything.
        raise InvalidRequest(f"unknown search parameter {unknown[0]!r}: the parameters are "
                             f"{', '.join(SEARCH_PARAMETERS)}", param=unknown[0])
    query = ModelQuery(text=q.strip() or None if q is not None else None, provider=provider, modality=modality,
                       max_input_price=max_input_price, max_output_price=max_output_price,
                       min_context_length=min_context_length)
    return {"object": "list", "data": [model_object(model) for model in _catalog(request).search(query)]}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    model = _catalog(request).find(model_id)
    if model is not None:
        return model_object(model)
    raise ModelNotFound(f"The model `{model_id}` does not exist", param="model")
