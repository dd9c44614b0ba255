"""``POST /v1/embeddings``: OpenAI's embeddings, as a job like any other,
billed by input tokens at the model's input price. A plain handler, served
ahead of FastAPI (``ingress.edge``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ingress.routes.media import media_response
from ingress.submit import json_body
from schema.media import check_embeddings_request


async def embeddings(request: Request) -> Response:
    owner = await request.app.state.authenticate(request)
    body = check_embeddings_request(await json_body(request))
    return await media_response(request, owner, body, "embeddings")
