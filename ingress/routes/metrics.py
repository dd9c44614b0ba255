"""``GET /metrics`` on the ingress's port: the Prometheus exposition of this
process (``ingress.exposition``), with the pool, circuit and hold gauges
read as it is scraped."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    response: Response = await request.app.state.exposition.respond(request)
    return response
