"""Anthropic's Message Batches: ``POST /v1/messages/batches``,
``GET /v1/messages/batches/{id}``, ``GET /v1/messages/batches`` (paged),
``POST /v1/messages/batches/{id}/cancel`` and
``GET /v1/messages/batches/{id}/results`` (JSONL, streamed).

The requests come in the create call and are checked there (a bad one
refuses the batch with its index); then they run as the lines of an
OpenAI batch do (``scheduler.batches``).
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import StreamingResponse

from ingress.batch_results import anthropic_results
from ingress.runtime import Runtime
from ingress.submit import json_body
from scheduler.batches.actors import send_validate
from scheduler.batches.store import Batch
from scheduler.batches.validation import anthropic_requests
from schema.batches import ENDED_STATUSES, MESSAGE_BATCH_ID_PATTERN
from schema.errors import InvalidRequest, NotFound
from schema.openapi import ref

router = APIRouter()

WINDOW = 24 * 3600.0
_BATCH_ID = re.compile(MESSAGE_BATCH_ID_PATTERN)


def _iso(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")


def message_batch_object(batch: Batch, base_url: str) -> dict[str, Any]:
    ended = batch.status in ENDED_STATUSES
    ended_at = batch.completed_at or batch.expired_at or batch.cancelled_at or batch.failed_at
    return {
        "id": batch.id, "type": "message_batch",
        "processing_status": "ended" if ended else "canceling" if batch.status == "cancelling" else "in_progress",
        "request_counts": {"processing": batch.total - batch.finished, "succeeded": batch.succeeded,
                           "errored": batch.errored, "canceled": batch.canceled, "expired": batch.expired},
        "ended_at": _iso(ended_at) if ended else None, "created_at": _iso(batch.created_at),
        "expires_at": _iso(batch.expires_at), "archived_at": None, "cancel_initiated_at": _iso(batch.cancelling_at),
        "results_url": f"{base_url}v1/messages/batches/{batch.id}/results" if ended else None,
    }


async def _own(request: Request, batch_id: str) -> tuple[Runtime, Batch]:
    runtime: Runtime = request.app.state.runtime
    owner = await request.app.state.authenticate(request)
    batch = await runtime.batches.store.get(batch_id, owner.account_id) if _BATCH_ID.match(batch_id) else None
    if batch is None or batch.api != "anthropic":
        raise NotFound(f"No such message batch: {batch_id!r}")
    return runtime, batch


@router.post("/v1/messages/batches", openapi_extra={"requestBody": {
    "required": True, "content": {"application/json": {"schema": ref("MessageBatchCreate")}}}})
async def create_message_batch(request: Request) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    owner = await request.app.state.authenticate(request)
    body = await json_body(request)
    try:
        lines = anthropic_requests(body.get("requests") if isinstance(body, dict) else None)
    except ValueError as error:
        raise InvalidRequest(str(error), param="requests") from None
    store = runtime.batches.store
    batch = await store.create(api="anthropic", account_id=owner.account_id, key_id=owner.key_id,
                               endpoint="/v1/messages", input_file_id=None, metadata=None, window=WINDOW)
    for start in range(0, len(lines), 500):
        await store.add_lines(batch.id, lines[start:start + 500])
    await store.move(batch.id, "validating", when=("validating",), total=len(lines))
    await asyncio.to_thread(send_validate, runtime.batches.broker, runtime.batches.queue, batch.id)
    created = await store.get(batch.id)
    assert created is not None
    return message_batch_object(created, str(request.base_url))


@router.get("/v1/messages/batches/{batch_id}")
async def retrieve_message_batch(request: Request, batch_id: str) -> dict[str, Any]:
    _, batch = await _own(request, batch_id)
    return message_batch_object(batch, str(request.base_url))


@router.get("/v1/messages/batches")
async def list_message_batches(request: Request,
                               before_id: Annotated[str | None, Query(pattern=MESSAGE_BATCH_ID_PATTERN)] = None,
                               after_id: Annotated[str | None, Query(pattern=MESSAGE_BATCH_ID_PATTERN)] = None,
                               limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    owner = await request.app.state.authenticate(request)
    found, more = await runtime.batches.store.page(owner.account_id, "anthropic", after=after_id, before=before_id,
                                                   limit=limit)
    data = [message_batch_object(batch, str(request.base_url)) for batch in found]
    return {"data": data, "has_more": more, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


@router.post("/v1/messages/batches/{batch_id}/cancel")
async def cancel_message_batch(request: Request, batch_id: str) -> dict[str, Any]:
    runtime, batch = await _own(request, batch_id)
    cancelled = await runtime.batches.orchestrator.cancel(batch_id, batch.account_id)
    assert cancelled is not None
    return message_batch_object(cancelled, str(request.base_url))


@router.get("/v1/messages/batches/{batch_id}/results")
async def message_batch_results(request: Request, batch_id: str) -> StreamingResponse:
    runtime, batch = await _own(request, batch_id)
    if batch.status not in ENDED_STATUSES:
        raise InvalidRequest(f"Message batch {batch_id!r} has not ended yet; its results are not ready")
    return StreamingResponse(anthropic_results(runtime.batches.store, batch_id), media_type="application/binary")
