"""OpenAI's Files API: ``POST /v1/files`` (upload), ``GET /v1/files``
(list, paged), ``GET /v1/files/{id}``, ``DELETE /v1/files/{id}`` and
``GET /v1/files/{id}/content``, on the caller's account's files only
(``scheduler.files``), and on its batches' output and error files, made
from their results as they are read (``ingress.batch_results``).

An upload is parsed by Starlette, which spools a file part to disk past
1 MB, and stored from there chunk by chunk; a download streams one chunk
at a time. The body's size was bounded below the app
(``ingress.body_limits``); the file's own limit depends on its purpose.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.responses import StreamingResponse

from ingress.batch_results import find_generated, generated_file, generated_size, openai_file
from ingress.runtime import Runtime
from scheduler.batches.store import Batch
from scheduler.files import StoredFile
from schema.errors import FileNotFound, InvalidRequest
from schema.files import (
    FILE_ID_PATTERN,
    MAX_FILENAME,
    MAX_FORM_FIELDS,
    PURPOSES,
    UPLOAD_PURPOSES,
    ExpiresAfter,
    Purpose,
)
from schema.openapi import ref

router = APIRouter()

# What the routes answer, for the OpenAPI document (``schema.openapi``).
_UPLOAD = {"requestBody": {"required": True,
                           "content": {"multipart/form-data": {"schema": ref("FileUpload")}}}}


def _answers(schema: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {"application/json": {"schema": ref(schema)}}}}


# OpenAI's own default: batch input expires after 30 days, other files never.
BATCH_EXPIRY = 30 * 86_400
READ_BYTES = 256 * 1024  # what is read from the spooled upload at a time
MAX_LIST = 10_000
_FILE_ID = re.compile(FILE_ID_PATTERN)


@router.post("/v1/files", openapi_extra=_UPLOAD, responses=_answers("FileObject"))
async def upload_file(request: Request) -> dict[str, Any]:
    owner = await request.app.state.authenticate(request)
    runtime: Runtime = request.app.state.runtime
    # The file is one of the form's fields, counted by ``max_files``.
    async with request.form(max_files=1, max_fields=MAX_FORM_FIELDS - 1) as form:
        purpose = _purpose(form)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("'file' is required: the file to upload, as a multipart file part",
                                 param="file")
        expires_after = _expires_after(form, purpose)
        limit = runtime.settings.max_batch_file_bytes if purpose == "batch" else runtime.settings.max_file_bytes
        stored = await runtime.files.save(
            account_id=owner.account_id, purpose=purpose, filename=_filename(upload),
            content=_chunks(upload), max_bytes=limit,
            expires_at=int(runtime.files.clock()) + expires_after if expires_after is not None else None)
    return stored.openai_object()


@router.get("/v1/files", responses=_answers("FileList"))
async def list_files(
    request: Request,
    after: Annotated[str | None, Query(pattern=FILE_ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = MAX_LIST,
    order: Literal["asc", "desc"] = "desc",
    purpose: Purpose | None = None,
) -> dict[str, Any]:
    owner = await request.app.state.authenticate(request)
    runtime: Runtime = request.app.state.runtime
    page, has_more = await runtime.files.page(owner.account_id, purpose=purpose, after=after, limit=limit,
                                              order=order)
    return {"object": "list", "data": [stored.openai_object() for stored in page],
            "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None,
            "has_more": has_more}


@router.get("/v1/files/{file_id}", responses=_answers("FileObject"))
async def retrieve_file(request: Request, file_id: str) -> dict[str, Any]:
    if (generated := await _generated(request, file_id)) is not None:
        runtime: Runtime = request.app.state.runtime
        batch, output = generated
        return generated_file(batch, output=output,
                              size=await generated_size(runtime.batches.store, batch.id, output=output))
    return (await _owned(request, file_id)).openai_object()


@router.delete("/v1/files/{file_id}", responses=_answers("FileDeleted"))
async def delete_file(request: Request, file_id: str) -> dict[str, Any]:
    owner = await request.app.state.authenticate(request)
    runtime: Runtime = request.app.state.runtime
    if not _FILE_ID.match(file_id) or not await runtime.files.delete(owner.account_id, file_id):
        raise _not_found(file_id)
    return {"id": file_id, "object": "file", "deleted": True}


@router.get("/v1/files/{file_id}/content", response_class=StreamingResponse, responses={
    200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
          "description": "The file's content, as uploaded."}})
async def file_content(request: Request, file_id: str) -> StreamingResponse:
    runtime: Runtime = request.app.state.runtime
    if (generated := await _generated(request, file_id)) is not None:
        # A batch's output or error file: its results so far, in line order.
        batch, output = generated
        return StreamingResponse(openai_file(runtime.batches.store, batch.id, output=output),
                                 media_type="application/octet-stream")
    stored = await _owned(request, file_id)
    return StreamingResponse(runtime.files.read(stored.id), media_type="application/octet-stream",
                             headers={"content-length": str(stored.bytes)})


async def _generated(request: Request, file_id: str) -> tuple[Batch, bool] | None:
    """The batch and whether it is the output (else the error) file, for a
    batch's results file (purpose ``batch_output``, made from its results)."""
    owner = await request.app.state.authenticate(request)
    runtime: Runtime = request.app.state.runtime
    return await find_generated(runtime.batches.store, owner.account_id, file_id)


async def _owned(request: Request, file_id: str) -> StoredFile:
    owner = await request.app.state.authenticate(request)
    runtime: Runtime = request.app.state.runtime
    stored = await runtime.files.find(owner.account_id, file_id) if _FILE_ID.match(file_id) else None
    if stored is None:
        raise _not_found(file_id)
    return stored


def _not_found(file_id: str) -> FileNotFound:
    # The same whether it never existed, expired, or is another account's.
    return FileNotFound(f"No such File object: {file_id}", param="id")


def _purpose(form: FormData) -> str:
    purpose = form.get("purpose")
    if not isinstance(purpose, str) or not purpose:
        raise InvalidRequest("'purpose' is required: one of " + ", ".join(sorted(UPLOAD_PURPOSES)),
                             param="purpose")
    if purpose not in UPLOAD_PURPOSES:
        made = " (the gateway makes those files)" if purpose in PURPOSES else ""
        raise InvalidRequest(f"Purpose {purpose!r} cannot be uploaded{made}; one of "
                             + ", ".join(sorted(UPLOAD_PURPOSES)), param="purpose")
    return purpose


def _filename(upload: UploadFile) -> str:
    name = upload.filename or "upload"
    # A NUL is no character PostgreSQL's text can hold.
    if len(name) > MAX_FILENAME or "\x00" in name:
        raise InvalidRequest(f"The file's name must be at most {MAX_FILENAME} characters, without NUL",
                             param="file")
    return name


def _expires_after(form: FormData, purpose: str) -> int | None:
    """Seconds from creation to expiry: ``expires_after[seconds]`` (after
    ``expires_after[anchor]``, which can only be ``created_at``), as the SDK
    sends it; without it, OpenAI's default for the purpose."""
    fields = {name: form[f"expires_after[{name}]"] for name in ("anchor", "seconds")
              if f"expires_after[{name}]" in form}
    try:
        seconds = ExpiresAfter.model_validate(fields).seconds
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(f"expires_after.{field}: {first['msg']}", param=f"expires_after.{field}") from None
    if seconds is None:
        return BATCH_EXPIRY if purpose == "batch" else None
    return seconds


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while piece := await upload.read(READ_BYTES):
        yield piece
