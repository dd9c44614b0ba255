"""``POST /v1/images/generations``: OpenAI's image generation, as a job like
any other, billed per image (plus the tokens a GPT Image model reports). A
plain handler, served ahead of FastAPI (``ingress.edge``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ingress.routes.media import media_response
from ingress.submit import json_body
from schema.media import check_images_request


async def generate_images(request: Request) -> Response:
    owner = await request.app.state.authenticate(request)
    body = check_images_request(await json_body(request))
    return await media_response(request, owner, body, "images")
