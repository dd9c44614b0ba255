"""``POST /v1/embeddings``: OpenAI's embeddings, as a job like any other,
billed by input tokens at the model's input price."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ingress.routes.media import media_response
from ingress.submit import json_body
from schema.media import check_embeddings_request

router = APIRouter()


@router.post("/v1/embeddings")
@router.post("/embeddings", include_in_schema=False)
async def embeddings(request: Request) -> Response:
    owner = await request.app.state.authenticate(request)
    body = check_embeddings_request(await json_body(request))
    return await media_response(request, owner, body, "embeddings")
