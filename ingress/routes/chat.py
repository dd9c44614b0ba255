"""``POST /v1/chat/completions``: admit (reserve the worst-case cost),
enqueue, relay."""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from billing.admission import worst_case_cost
from ingress.relay import EventReader, add_cost, openai_sse, raise_for_error
from ingress.runtime import Runtime
from schema.errors import InvalidRequest, StreamBroken
from schema.jobs import Job
from schema.money import micros_to_credits
from schema.openai import check_chat_request, wants_usage

router = APIRouter()

# Settlement may lag a job's deadline a little; the sweeper waits this long.
HOLD_GRACE = 60.0

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
    owner = await request.app.state.authenticate(request)
    body = check_chat_request(await _body(request))
    route = runtime.catalog.route(body["model"])

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
        created_at=now,
        deadline=now + runtime.settings.request_timeout,
        price=route.price,
    )
    worst_case = worst_case_cost(payload, route.price, route.spec.max_output_tokens if route.spec else None)
    await runtime.ledger.hold(job.id, owner.account_id, worst_case, expires_at=job.deadline + HOLD_GRACE,
                              key_id=owner.key_id, now=now)
    headers = {"x-gatewayz-job-id": job.id, "x-gatewayz-provider": job.provider}
    try:
        # Subscribe before enqueueing: pub/sub keeps nothing for late listeners.
        subscription = await runtime.results.subscribe(job.id)
    except BaseException:
        await runtime.ledger.release(job.id)
        raise
    reader = EventReader(subscription, deadline=job.deadline, idle_timeout=runtime.settings.stream_idle_timeout)
    try:
        await runtime.jobs.enqueue(job)
    except BaseException:
        await subscription.close()
        await runtime.ledger.release(job.id)  # never queued: nothing will settle it
        raise
    try:
        first = await reader.next(first=True)
        raise_for_error(first)
    except BaseException:
        await subscription.close()
        raise

    if stream:
        if first["kind"] not in ("chunk", "end"):
            await subscription.close()
            raise StreamBroken(f"expected a stream, got a {first['kind']!r} event")
        chunks = openai_sse(first, reader, include_usage=wants_usage(body), price=job.price)
        return StreamingResponse(chunks, media_type="text/event-stream", headers={**SSE_HEADERS, **headers})
    await subscription.close()
    if first["kind"] != "response":
        raise StreamBroken(f"expected a response, got a {first['kind']!r} event")
    completion = first["data"]
    cost = add_cost(completion.get("usage") if isinstance(completion, dict) else None, job.price)
    if cost is not None:
        headers["x-gatewayz-cost"] = micros_to_credits(cost)
    return Response(orjson.dumps(completion), media_type="application/json", headers=headers)
