"""The gateway's ASGI app as the server sees it: the body's limits
(``ingress.body_limits``) around everything, then one dictionary lookup
that sends each job-submitting ``POST`` (chat completions, messages,
embeddings, images) straight to its handler, and every other request to
FastAPI, which keeps the admin, user, models and webhook APIs and the
OpenAPI document.

The hot endpoints so skip FastAPI's per-request layers (its telemetry
check, Starlette's error and exception middleware, the router's path
regexes, dependency solving), which cost as much CPU as their handlers.
All of it is pure ASGI, never a ``BaseHTTPMiddleware``, so a handler still
sees ``http.disconnect`` (``ingress.cancellation``). What a handler raises
is answered as FastAPI's handlers answer it (``ingress.errors.answer``);
another method on a hot path is a 405 that allows ``POST``, in the path's
dialect, and one with a trailing slash is redirected to the path without it.

Each request the hot endpoints answer is counted once its answer has gone
out (``ingress.metrics``). It is also watched (``ingress.exchange``: its
trace's root span, its log line) if the process traces or logs a line per
request, until its response has gone out, streams included.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI
from starlette.datastructures import URL, State
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import Receive, Scope, Send

from ingress.body_limits import BodyLimits
from ingress.errors import answer, plain_error
from ingress.exchange import SCOPE_KEY, Exchange, observing
from ingress.metrics import SUBMITTED, IngressMetrics
from scheduler.tracing import Tracing

Handler = Callable[[Request], Awaitable[Response]]


class Edge:
    """``api`` serves what ``routes`` (path to handler) does not. Its
    ``state`` is the app's state that handlers and FastAPI's routes read
    (``request.app.state``), which its lifespan fills."""

    def __init__(self, api: FastAPI, routes: Mapping[str, Handler], *, max_body_bytes: int,
                 uploads: Mapping[str, int] | None = None) -> None:
        self.api = api
        self.routes = dict(routes)
        self._http = BodyLimits(self._dispatch, max_body_bytes=max_body_bytes, uploads=uploads)
        self.tracing: Tracing | None = None  # the runtime's, set by the app's lifespan
        self.metrics: IngressMetrics | None = None  # set by the lifespan that builds them

    @property
    def state(self) -> State:
        return self.api.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        else:
            await self.api(scope, receive, send)  # the lifespan

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        handler = self.routes.get(path)
        if handler is None:
            if path.endswith("/") and path.rstrip("/") in self.routes:
                # As FastAPI's router answered when it served them: to the path without the slash.
                await RedirectResponse(str(URL(scope={**scope, "path": path.rstrip("/")})))(scope, receive, send)
                return
            await self.api(scope, receive, send)
            return
        started = time.perf_counter()
        SUBMITTED.set(None)  # what ``submit`` learns of this request, for its metrics
        scope["app"] = self.api  # as Starlette sets it: handlers read ``request.app.state``
        exchange = Exchange(self.tracing, scope) if observing(self.tracing) else None
        scope[SCOPE_KEY] = exchange
        request = Request(scope, receive, send)
        raised: Exception | None = None
        if scope["method"] != "POST":
            response = plain_error(request, "Method Not Allowed", 405, headers={"Allow": "POST"})
        else:
            try:
                response = await handler(request)
            except Exception as error:  # answered as FastAPI's handlers answer it; a 500 is logged there
                raised = error
                response = answer(request, error)
        try:
            await response(scope, receive, send)
        finally:
            # After the last byte: a stream's latency is its whole relay.
            if self.metrics is not None:
                self.metrics.observe(path, response.status_code, started, raised)
            if exchange is not None:
                exchange.finish(response)
