"""OpenAI's Batch API: ``POST /v1/batches``, ``GET /v1/batches/{id}``,
``GET /v1/batches`` (paged), ``POST /v1/batches/{id}/cancel``.

A batch names an uploaded file of requests (purpose ``batch``) and an
endpoint; the orchestrator checks the file and runs its lines as jobs
(``scheduler.batches``). Its output and error files are readable through
``/v1/files`` from the moment it runs (``ingress.batch_results``). Beyond
OpenAI, one batch may mix models and providers: each line is routed on its
own ``model``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from ingress.batch_results import error_file_id, output_file_id
from ingress.runtime import Runtime
from scheduler.batches.actors import send_validate
from scheduler.batches.store import Batch
from schema.batches import BATCH_ID_PATTERN
from schema.errors import InvalidRequest, NotFound
from schema.files import FILE_ID_PATTERN

router = APIRouter()

COMPLETION_WINDOWS = {"24h": 24 * 3600.0}
_BATCH_ID = re.compile(BATCH_ID_PATTERN)
MAX_METADATA = 16  # pairs, as OpenAI allows


class NewBatch(BaseModel):
    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: Literal["/v1/chat/completions", "/v1/embeddings"]
    completion_window: Literal["24h"]
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = None


def _seconds(value: float | None) -> int | None:
    return int(value) if value is not None else None


def batch_object(batch: Batch) -> dict[str, Any]:
    running = batch.status != "validating" and batch.status != "failed"
    return {
        "id": batch.id, "object": "batch", "endpoint": batch.endpoint,
        "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
        "input_file_id": batch.input_file_id, "completion_window": "24h", "status": batch.status,
        "output_file_id": output_file_id(batch.id) if running else None,
        "error_file_id": error_file_id(batch.id) if running else None,
        "created_at": int(batch.created_at), "in_progress_at": _seconds(batch.in_progress_at),
        "expires_at": int(batch.expires_at), "finalizing_at": _seconds(batch.finalizing_at),
        "completed_at": _seconds(batch.completed_at), "failed_at": _seconds(batch.failed_at),
        "expired_at": _seconds(batch.expired_at), "cancelling_at": _seconds(batch.cancelling_at),
        "cancelled_at": _seconds(batch.cancelled_at),
        "request_counts": {"total": batch.total, "completed": batch.succeeded,
                           "failed": batch.errored + batch.expired + batch.canceled},
        "metadata": batch.metadata,
    }


@router.post("/v1/batches")
async def create_batch(request: Request, body: NewBatch) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    owner = await request.app.state.authenticate(request)
    if body.metadata is not None and len(body.metadata) > MAX_METADATA:
        raise InvalidRequest(f"metadata may hold at most {MAX_METADATA} pairs", param="metadata")
    stored = (await runtime.files.find(owner.account_id, body.input_file_id)
              if re.match(FILE_ID_PATTERN, body.input_file_id) else None)
    if stored is None:
        raise NotFound(f"No such file: {body.input_file_id!r}", param="input_file_id")
    if stored.purpose != "batch":
        raise InvalidRequest(f"File {body.input_file_id!r} has purpose {stored.purpose!r}; a batch's input needs "
                             "purpose \"batch\"", param="input_file_id")
    batch = await runtime.batches.store.create(
        api="openai", account_id=owner.account_id, key_id=owner.key_id, endpoint=body.endpoint,
        input_file_id=body.input_file_id, metadata=body.metadata, window=COMPLETION_WINDOWS[body.completion_window])
    await asyncio.to_thread(send_validate, runtime.batches.broker, runtime.batches.queue, batch.id)
    return batch_object(batch)


@router.get("/v1/batches/{batch_id}")
async def retrieve_batch(request: Request, batch_id: str) -> dict[str, Any]:
    return batch_object(await _own(request, batch_id))


@router.get("/v1/batches")
async def list_batches(request: Request, after: Annotated[str | None, Query(pattern=BATCH_ID_PATTERN)] = None,
                       limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    owner = await request.app.state.authenticate(request)
    found, more = await runtime.batches.store.page(owner.account_id, "openai", after=after, before=None, limit=limit)
    data = [batch_object(batch) for batch in found]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}


@router.post("/v1/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str) -> dict[str, Any]:
    batch = await _own(request, batch_id)
    runtime: Runtime = request.app.state.runtime
    cancelled = await runtime.batches.orchestrator.cancel(batch_id, batch.account_id)
    assert cancelled is not None
    return batch_object(cancelled)


async def _own(request: Request, batch_id: str) -> Batch:
    """The caller's account's OpenAI batch, else 404 (whoever else's it is)."""
    runtime: Runtime = request.app.state.runtime
    owner = await request.app.state.authenticate(request)
    batch = await runtime.batches.store.get(batch_id, owner.account_id) if _BATCH_ID.match(batch_id) else None
    if batch is None or batch.api != "openai":
        raise NotFound(f"No such batch: {batch_id!r}")
    return batch
