"""The one place where errors become HTTP responses: in Anthropic's format
on the Anthropic dialect's paths (``/v1/messages``), in OpenAI's elsewhere.

FastAPI's exception handlers (``install_error_handlers``) and the hot
endpoints' own dispatch (``ingress.edge``) answer the same errors the
same way: both call ``answer``."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi import routing as fastapi_routing
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import BaseRoute

from schema.errors import GatewayError

log = logging.getLogger(__name__)

_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
                 429: "rate_limit_error"}


# Anthropic's error types by status (its API's documented set).
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    429: "rate_limit_error", 500: "api_error", 502: "api_error", 503: "overloaded_error",
                    504: "timeout_error", 529: "overloaded_error"}
ANTHROPIC_PATHS = ("/v1/messages",)


def anthropic_error_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")


def anthropic_error_body(message: str, status: int) -> dict[str, object]:
    return {"type": "error", "error": {"type": anthropic_error_type(status), "message": message}}


def openai_error_body(message: str, type_: str, *, code: str | None = None,
                      param: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _anthropic(request: Request) -> bool:
    return request.url.path.startswith(ANTHROPIC_PATHS)


def error_body(path: str, error: GatewayError) -> dict[str, object]:
    """``error`` as the dialect served at ``path`` writes it: also for the
    refusals made before any route runs (``ingress.body_limits``,
    ``ingress.server``)."""
    if path.startswith(ANTHROPIC_PATHS):
        return anthropic_error_body(error.message, error.status)
    return openai_error_body(error.message, error.type, code=error.code, param=error.param)


def refusal(path: str, error: GatewayError) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and body of a refusal made before any route ran (a
    request too large, too slow or not JSON): it closes the connection, so
    the rest of what the client sends is never read."""
    body = orjson.dumps(error_body(path, error))
    return [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
            (b"connection", b"close")], body


def error_response(request: Request, error: GatewayError) -> Response:
    return _json(error_body(request.url.path, error), error.status, {**error.job_headers, **error.headers()})


def plain_error(request: Request, message: str, status: int, *, param: str | None = None,
                headers: dict[str, str] | None = None) -> Response:
    if _anthropic(request):
        body = anthropic_error_body(message, status)
    else:
        body = openai_error_body(message, _STATUS_TYPES.get(status, "api_error"), param=param)
    return _json(body, status, headers)


def _json(body: dict[str, object], status: int, headers: dict[str, str] | None) -> Response:
    # orjson writes the same compact JSON as JSONResponse (no spaces), faster.
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def answer(request: Request, error: Exception) -> Response:
    """The answer to a request whose handler raised ``error``."""
    if isinstance(error, GatewayError):
        return error_response(request, error)
    if isinstance(error, ClientDisconnect):
        # The client left while sending its request: nobody to answer, nothing to log.
        return Response(status_code=499)
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    return plain_error(request, "internal error", 500)


def allowed_methods(request: Request) -> str:
    """Every method the request's path takes. Starlette's 405 names only the
    methods of the first route that matched the path, though other routes
    may serve it with others (``GET`` and ``PATCH /admin/keys/{id}``)."""
    path = request.scope["path"]
    methods: set[str] = set()
    for route in _flat_routes(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods.update(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def _flat_routes(routes: Sequence[BaseRoute]) -> Iterable[Any]:
    # Newer FastAPI nests each included router (its OpenAPI flattens them so);
    # older ones list every route flat.
    flatten = getattr(fastapi_routing, "iter_route_contexts", None)
    return flatten(routes) if flatten is not None else routes


def install_error_handlers(app: FastAPI) -> None:
    async def _answer(request: Request, error: Exception) -> Response:
        return answer(request, error)

    for caught in (GatewayError, ClientDisconnect, Exception):
        app.add_exception_handler(caught, _answer)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {}
        param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg", "invalid request"))
        return plain_error(request, message, 400, param=param)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> Response:
        headers = getattr(error, "headers", None)
        if error.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return plain_error(request, str(error.detail), error.status_code, headers=headers)
