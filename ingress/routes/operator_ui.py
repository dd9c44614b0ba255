"""``GET /admin/ui``: the operator page, one static HTML file with its own
script (``ingress/operator/page.html``, no build step). The page itself is
public and holds no data: it asks for the admin token, keeps it in the
tab's sessionStorage and sends it as a bearer token to the admin and
monitoring APIs it reads."""

from __future__ import annotations

import functools
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()

# No framing by other sites, no scripts but the page's own, no requests but to this gateway.
_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}


@functools.cache
def _page() -> str:
    return files("ingress.operator").joinpath("page.html").read_text(encoding="utf-8")


@router.get("/admin/ui", include_in_schema=False)
async def operator_page() -> HTMLResponse:
    return HTMLResponse(_page(), headers=_HEADERS)
