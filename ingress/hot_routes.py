"""The hot endpoints' dispatch: every job-submitting ``POST`` (chat
completions, messages, embeddings, images) goes straight to its handler,
ahead of FastAPI's router, exception middleware and dependency solving,
which the rest of the API (admin, user, models, webhooks, the OpenAPI
document) keeps.

Pure ASGI, inside ``ingress.body_limits`` (whose 413 and 415 hold here as
everywhere) and never a ``BaseHTTPMiddleware``, so a handler still sees
``http.disconnect`` (``ingress.cancellation``). One dictionary lookup per
request decides; what a handler raises is answered as FastAPI's handlers
answer it (``ingress.errors.answer``), and another method on a hot path is a
405 that allows ``POST``, in the path's dialect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ingress.errors import answer, plain_error

Handler = Callable[[Request], Awaitable[Response]]


class HotRoutes:
    def __init__(self, app: ASGIApp, routes: Mapping[str, Handler]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        if scope["method"] != "POST":
            response = plain_error(request, "Method Not Allowed", 405, headers={"Allow": "POST"})
        else:
            try:
                response = await handler(request)
            except Exception as error:  # answered as FastAPI's handlers answer it, 500s logged there
                response = answer(request, error)
        await response(scope, receive, send)
