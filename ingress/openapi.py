"""The OpenAPI document served at ``/openapi.json``.

FastAPI describes the routes it validates (the user and admin APIs); this
module completes the document once, when it is first asked for: the hot
endpoints' request and answer bodies (``schema.openapi``: they check their
bodies by hand, so nothing is added to a request's work), every status an
operation really answers with its dialect's error body (validation errors
are 400, never FastAPI's 422: ``ingress.errors``), and the security scheme
each operation accepts. Names that only this deployment's configuration
knows (its plans and providers) are listed as they are configured.

The Stripe webhook stays out: only Stripe calls it, and it authenticates by
the signature over its raw body, which no generated client or fuzzer can
make; ``tests/contract/test_topups.py`` covers it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ingress.errors import ANTHROPIC_PATHS
from ingress.submit import PRIORITY_HEADER
from scheduler.admission import MAX_QUEUE_HEADER
from scheduler.catalog import KINDS, MODALITIES
from schema.catalog import GatewayConfig
from schema.openapi import SCHEMAS, SECURITY_SCHEMES, decimal_string, ref
from schema.plans import PRIORITY_CLASSES

DESCRIPTION = (
    "An OpenAI- and Anthropic-compatible inference gateway. Errors come in OpenAI's format "
    "(`{\"error\": {...}}`), on `/v1/messages` in Anthropic's (`{\"type\": \"error\", ...}`)."
)

_WHY = {
    400: "The request is invalid; `param` names the field at fault.",
    401: "The key (or admin token) is missing, unknown, expired or revoked.",
    402: "The account's credits, or a spending limit of the key, cannot cover the request's worst case.",
    403: "The token does not grant admin access.",
    404: "No such model or resource.",
    408: "The request's headers or body did not arrive in time.",
    409: "It conflicts with what exists (the coupon exists or was redeemed; the idempotency key was used "
         "for another request).",
    413: "The request body is too large.",
    415: "The body is not `application/json` (an upload's: not `multipart/form-data`).",
    429: "Over a rate limit; `retry-after` says when to retry.",
    431: "The request's headers are too large.",
    502: "The provider failed, or its answer broke off.",
    503: "No provider can take the request now (`circuit_open`, `queue_full`, `no_workers`), or the API is "
         "not configured; `retry-after` says when to retry.",
    504: "The request's deadline passed (`timeout`, `queue_timeout`).",
}
_RETRY_AFTER = {"retry-after": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}}

# Every operation's request may be cut at the edge: headers too large or too slow.
_EDGE = (408, 431)
_JSON_BODY = (413, 415)
_USER = (401,)
_ADMIN = (401, 403, 503)
# What a job can meet on its way: a refusal before anything is held, or its answer's failure.
_JOB = (402, 404, 429, 502, 503, 504)

_JOB_PATHS = {
    "/v1/chat/completions": ("ChatCompletionRequest", "ChatCompletion", True),
    "/v1/messages": ("MessagesRequest", "Message", True),
    "/v1/embeddings": ("EmbeddingsRequest", "Embeddings", False),
    "/v1/images/generations": ("ImagesRequest", "Images", False),
}
# The hot endpoints are served ahead of FastAPI (``ingress.edge``), which
# so does not list them: their operations keep the ids and summaries it gave them.
_HOT_OPERATIONS = {
    "/v1/chat/completions": ("chat_completions_v1_chat_completions_post", "Chat Completions"),
    "/v1/messages": ("messages_v1_messages_post", "Messages"),
    "/v1/embeddings": ("embeddings_v1_embeddings_post", "Embeddings"),
    "/v1/images/generations": ("generate_images_v1_images_generations_post", "Generate Images"),
}
_USER_PATHS = ("/v1/provider", "/v1/providers", "/user/", "/v1/files", "/v1/batches", "/v1/messages/batches")
# Statuses beyond the ones every operation of its kind answers.
_EXTRA: dict[tuple[str, str], tuple[int, ...]] = {
    ("get", "/v1/models/{model_id}"): (404,),
    ("post", "/user/coupons/redeem"): (404, 409),
    ("post", "/admin/coupons"): (409,),
    ("get", "/admin/coupons/{code}"): (404,),
    ("post", "/admin/accounts/{account_id}/credits"): (404, 409),
    ("get", "/admin/accounts/{account_id}/ledger"): (404,),
    ("get", "/admin/keys/{key_id}"): (404,),
    ("patch", "/admin/keys/{key_id}"): (404,),
    ("post", "/admin/refresh-providers"): (404,),
    ("post", "/admin/providers/{provider}/reset"): (404,),
    ("get", "/admin/pools"): (404,),
    ("get", "/v1/files/{file_id}"): (404,),
    ("delete", "/v1/files/{file_id}"): (404,),
    ("get", "/v1/files/{file_id}/content"): (404,),
    ("post", "/v1/batches"): (404,),
    ("get", "/v1/batches/{batch_id}"): (404,),
    ("post", "/v1/batches/{batch_id}/cancel"): (404,),
    ("get", "/v1/messages/batches/{batch_id}"): (404,),
    ("post", "/v1/messages/batches/{batch_id}/cancel"): (404,),
    ("get", "/v1/messages/batches/{batch_id}/results"): (404,),
}

# Successes beyond the route's own status: the adjustment an idempotency key replays.
_REPLAYED = {("post", "/admin/accounts/{account_id}/credits"):
             "The idempotency key was used before, for this same adjustment: nothing new was applied."}

_JOB_HEADERS = [
    {"name": PRIORITY_HEADER, "in": "header", "required": False,
     "description": "Run at this lower class than the key's plan gives (a higher one is ignored).",
     "schema": {"enum": list(PRIORITY_CLASSES)}},
    {"name": MAX_QUEUE_HEADER, "in": "header", "required": False,
     "description": "The longest the job may wait in its queue, in milliseconds; 503 at once if the estimated "
                    "wait is longer, 504 `queue_timeout` if it waits longer.",
     # Digits, not an integer: a header is text, and a validator would take a number's text for a string.
     "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"}},
]


# With `"stream": true`: each server-sent event (OpenAPI 3.1 has `schema` describe one event).
_EVENT = {"type": "object", "required": ["data"],
          "properties": {"event": {"type": "string"},
                         "data": {"type": "string", "description": "A JSON chunk (OpenAI) or event (Anthropic); "
                                                                   "OpenAI's stream ends with `[DONE]`."}}}
_PAGED = ("/user/usage", "/admin/accounts/{account_id}/ledger")
_ONE_WAY = "Send `cursor` or a non-zero `offset`, not both."


def install_openapi(app: FastAPI, config: GatewayConfig) -> None:
    """Serve the completed document (built once, on the first request for it)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(app, config)
        return app.openapi_schema

    # FastAPI's documented way to serve a custom document: replace the method.
    app.openapi = openapi  # type: ignore[method-assign]


def describe(app: FastAPI, config: GatewayConfig) -> dict[str, Any]:
    document = get_openapi(title=app.title, version=app.version, description=DESCRIPTION, routes=app.routes)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(SCHEMAS)
    # A plan the config lacks is refused (400 `unknown_plan`).
    schemas["KeyChange"]["properties"]["plan"] = {"anyOf": [{"enum": sorted(config.plans)}, {"type": "null"}],
                                                  "description": "A plan of the config; null: the default plan."}
    components["securitySchemes"] = SECURITY_SCHEMES
    hot = {path: {"post": {"summary": summary, "operationId": operation_id}}
           for path, (operation_id, summary) in _HOT_OPERATIONS.items()}
    document["paths"] = {**hot, **document["paths"]}  # first, where FastAPI listed them
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            _complete(method, path, operation)
    _describe_search(document["paths"]["/v1/models/search"]["get"], sorted(config.providers))
    for path in _PAGED:
        operation = document["paths"][path]["get"]
        operation["description"] = f"{operation.get('description', '')}\n\n{_ONE_WAY}".strip()
    return document


def _describe_search(operation: dict[str, Any], providers: list[str]) -> None:
    """The search checks its query by hand (``scheduler.catalog``): say what it takes."""
    price = {"anyOf": [{"type": "number", "minimum": 0}, decimal_string()],
             "description": "Credits per million tokens."}
    described = {
        "provider": {"enum": providers, "description": "One of the model's candidates (`GET /v1/provider`)."},
        "modality": {"enum": [*KINDS, *MODALITIES], "description": "An input modality, or a kind of model."},
        "max_input_price": price,
        "max_output_price": price,
        "min_context_length": {"type": "integer", "minimum": 1},
    }
    for parameter in operation["parameters"]:
        if parameter["name"] in described:
            parameter["schema"] = described[parameter["name"]]


# Behind the admin token (the operator page, /admin/ui, is left out of the document).
ADMIN_PATHS = ("/admin/", "/api/monitoring/")


def _complete(method: str, path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)
    statuses: set[int] = set(_EDGE)
    if operation.get("parameters"):
        statuses.add(400)
    if path in _JOB_PATHS:
        request, answer, streams = _JOB_PATHS[path]
        _describe_job(operation, request, answer, streams)
        statuses.update((400, *_JSON_BODY, *_USER, *_JOB))
    elif "requestBody" in operation:
        statuses.update((400, *_JSON_BODY))
    if path.startswith(ADMIN_PATHS):
        operation["security"] = [{"AdminToken": []}]
        statuses.update(_ADMIN)
    elif path in _JOB_PATHS or path.startswith(_USER_PATHS):
        operation["security"] = [{"ApiKey": []}, {"ApiKeyHeader": []}]
        statuses.update(_USER)
    statuses.update(_EXTRA.get((method, path), ()))
    if (method, path) in _REPLAYED:
        responses["200"] = {**responses["201"], "description": _REPLAYED[method, path]}
    error = "AnthropicError" if path.startswith(ANTHROPIC_PATHS) else "OpenAIError"
    for status in sorted(statuses):
        responses[str(status)] = _error_response(status, error)


def _describe_job(operation: dict[str, Any], request: str, answer: str, streams: bool) -> None:
    operation["parameters"] = [*operation.get("parameters", []), *_JOB_HEADERS]
    operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(request)}}}
    content: dict[str, Any] = {"application/json": {"schema": ref(answer)}}
    if streams:
        content["text/event-stream"] = {"schema": _EVENT}
    operation["responses"]["200"] = {"description": "The answer.", "content": content}


def _error_response(status: int, error: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": _WHY[status], "content": {"application/json": {"schema": ref(error)}}}
    if status in (429, 503):
        response["headers"] = _RETRY_AFTER
    return response
