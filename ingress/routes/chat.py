"""``POST /v1/chat/completions`` (also ``/chat/completions``): OpenAI's
dialect, JSON or server-sent events. A plain handler, served ahead of
FastAPI (``ingress.edge``)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ingress.cancellation import RelayStream, cancel_job
from ingress.exchange import SCOPE_KEY
from ingress.relay import add_cost, openai_sse
from ingress.runtime import Runtime
from ingress.submit import PRIORITY_HEADER, json_body, submit
from scheduler.admission import MAX_QUEUE_HEADER
from schema.errors import StreamBroken
from schema.money import micros_to_credits
from schema.openai import check_chat_request, wants_usage

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def chat_completions(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    owner = await request.app.state.authenticate(request)
    body = check_chat_request(await json_body(request))
    route = runtime.catalog.route(body["model"])
    stream = bool(body.get("stream", False))
    payload = {name: value for name, value in body.items() if name not in ("model", "stream")}
    submitted = await submit(runtime, owner, route, payload, stream=stream,
                             priority=request.headers.get(PRIORITY_HEADER), receive=request.receive,
                             max_queue_ms=request.headers.get(MAX_QUEUE_HEADER),
                             exchange=request.scope[SCOPE_KEY])
    first, reader, headers, job = submitted.first, submitted.reader, submitted.headers, submitted.job

    if stream:
        if first["kind"] not in ("chunk", "end"):
            await reader.subscription.close()
            raise StreamBroken(f"expected a stream, got a {first['kind']!r} event")
        chunks = openai_sse(first, reader, include_usage=wants_usage(body), price=job.price, hold=job.hold)
        return RelayStream(chunks, headers={**SSE_HEADERS, **headers},
                           on_abandon=lambda: cancel_job(runtime.results, job))
    await reader.subscription.close()
    if first["kind"] != "response":
        raise StreamBroken(f"expected a response, got a {first['kind']!r} event")
    completion = first["data"]
    cost = add_cost(completion.get("usage") if isinstance(completion, dict) else None, job.price, job.hold)
    if cost is not None:
        headers["x-gatewayz-cost"] = micros_to_credits(cost)
    return Response(orjson.dumps(completion), media_type="application/json", headers=headers)
