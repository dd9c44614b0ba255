"""``POST /v1/chat/completions``: admit, enqueue, relay."""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from ingress.auth import authenticate
from ingress.relay import EventReader, openai_sse, raise_for_error
from ingress.runtime import Runtime
from scheduler.topology import DEFAULT_PRIORITY
from schema.errors import InsufficientCredits, InvalidRequest, StreamBroken
from schema.jobs import Job
from schema.openai import check_chat_request, wants_usage

router = APIRouter()

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def _body(request: Request) -> object:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON") from None


@router.post("/v1/chat/completions")
@router.post("/chat/completions", include_in_schema=False)
async def chat_completions(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    owner = await authenticate(request, runtime.engine, request.app.state.key_secret)
    body = check_chat_request(await _body(request))
    route = runtime.catalog.route(body["model"])
    if owner.balance <= 0:
        raise InsufficientCredits("Your account has no credits left: top up to continue")

    stream = bool(body.get("stream", False))
    payload = {name: value for name, value in body.items() if name not in ("model", "stream")}
    now = time.time()
    job = Job(
        account_id=owner.account_id,
        key_id=owner.key_id,
        model=route.model,
        routes=route.routes,
        payload=payload,
        stream=stream,
        priority=DEFAULT_PRIORITY,
        created_at=now,
        deadline=now + runtime.settings.request_timeout,
        price=route.price,
    )
    # Subscribe before enqueueing: pub/sub keeps nothing for late listeners.
    subscription = await runtime.results.subscribe(job.id)
    reader = EventReader(subscription, deadline=job.deadline, idle_timeout=runtime.settings.stream_idle_timeout)
    headers = {"x-gatewayz-job-id": job.id, "x-gatewayz-provider": job.provider}
    try:
        await runtime.jobs.enqueue(job)
        first = await reader.next(first=True)
        raise_for_error(first)
    except BaseException:
        await subscription.close()
        raise

    if stream:
        if first["kind"] not in ("chunk", "end"):
            await subscription.close()
            raise StreamBroken(f"expected a stream, got a {first['kind']!r} event")
        chunks = openai_sse(first, reader, include_usage=wants_usage(body))
        return StreamingResponse(chunks, media_type="text/event-stream", headers={**SSE_HEADERS, **headers})
    await subscription.close()
    if first["kind"] != "response":
        raise StreamBroken(f"expected a response, got a {first['kind']!r} event")
    return Response(orjson.dumps(first["data"]), media_type="application/json", headers=headers)
