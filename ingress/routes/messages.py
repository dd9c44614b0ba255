"""``POST /v1/messages``: Anthropic's dialect, JSON or server-sent events.

The key comes as ``x-api-key`` or ``Authorization: Bearer``, and any
``anthropic-version`` is accepted. The request travels in Anthropic's shape:
an Anthropic provider gets it untouched, others get it translated. A plain
handler, served ahead of FastAPI (``ingress.edge``).
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from billing.pricing import charge
from ingress.cancellation import RelayStream, cancel_job
from ingress.exchange import SCOPE_KEY
from ingress.relay import anthropic_sse
from ingress.routes.chat import SSE_HEADERS
from ingress.runtime import Runtime
from ingress.submit import PRIORITY_HEADER, json_body, submit
from scheduler.admission import MAX_QUEUE_HEADER
from schema.anthropic import check_messages_request
from schema.errors import StreamBroken
from schema.money import micros_to_credits
from schema.translate import response_usage


async def messages(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    owner = await request.app.state.authenticate(request)
    body = check_messages_request(await json_body(request))
    route = runtime.catalog.route(body["model"])
    stream = bool(body.get("stream", False))
    payload = {name: value for name, value in body.items() if name not in ("model", "stream")}
    submitted = await submit(runtime, owner, route, payload, stream=stream, dialect="anthropic",
                             priority=request.headers.get(PRIORITY_HEADER), receive=request.receive,
                             max_queue_ms=request.headers.get(MAX_QUEUE_HEADER),
                             exchange=request.scope[SCOPE_KEY])
    first, reader, headers = submitted.first, submitted.reader, submitted.headers

    if stream:
        if first["kind"] not in ("chunk", "end"):
            await reader.subscription.close()
            raise StreamBroken(f"expected a stream, got a {first['kind']!r} event")
        return RelayStream(anthropic_sse(first, reader), headers={**SSE_HEADERS, **headers},
                           on_abandon=lambda: cancel_job(runtime.results, submitted.job))
    await reader.subscription.close()
    if first["kind"] != "response" or not isinstance(first["data"], dict):
        raise StreamBroken(f"expected a response, got a {first['kind']!r} event")
    message = first["data"]
    usage = response_usage(message, "anthropic")
    if usage is not None:
        headers["x-gatewayz-cost"] = micros_to_credits(charge(usage, submitted.job.price, submitted.job.hold).cost)
    return Response(orjson.dumps(message), media_type="application/json", headers=headers)
