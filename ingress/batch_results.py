"""A batch's results in each dialect's line format, streamed from the
database a page at a time, while the batch runs and after it ends.

OpenAI: the output file holds the lines that succeeded, the error file the
rest; a request the provider refused keeps its status and error body, one
that never ran (expired, cancelled) has ``response: null`` and an
``error``. Anthropic: one ``results`` stream, each line ``succeeded``,
``errored``, ``canceled`` or ``expired``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from ingress.errors import anthropic_error_type
from scheduler.batches.store import Batch, BatchStore, Result

OUTPUT_SUFFIX = "-output"
ERRORS_SUFFIX = "-errors"
NEVER_RAN = ("batch_expired", "batch_cancelled")


def output_file_id(batch_id: str) -> str:
    return f"file-{batch_id}{OUTPUT_SUFFIX}"


def error_file_id(batch_id: str) -> str:
    return f"file-{batch_id}{ERRORS_SUFFIX}"


def batch_of_file(file_id: str) -> tuple[str, bool] | None:
    """``(batch id, whether it is the output file)`` for a batch's result
    file's id; None for any other id."""
    if not file_id.startswith("file-batch_"):
        return None
    for suffix, output in ((OUTPUT_SUFFIX, True), (ERRORS_SUFFIX, False)):
        if file_id.endswith(suffix):
            return file_id[len("file-"):-len(suffix)], output
    return None


def openai_line(result: Result) -> dict[str, Any]:
    """One line of the output or error file, as OpenAI writes it; a line
    refused before it ran has no job, so no ``request_id``."""
    request_id = result.job_id
    line_id = f"batch_req_{result.job_id or result.line}"
    if result.outcome == "succeeded":
        return {"id": line_id, "custom_id": result.custom_id,
                "response": {"status_code": 200, "request_id": request_id, "body": result.body}, "error": None}
    error = result.body
    if error.get("code") in NEVER_RAN:
        return {"id": line_id, "custom_id": result.custom_id, "response": None,
                "error": {"code": error.get("code"), "message": error.get("message")}}
    body = {"error": {"message": error.get("message"), "type": error.get("type"), "param": None,
                      "code": error.get("code")}}
    return {"id": line_id, "custom_id": result.custom_id,
            "response": {"status_code": error.get("status", 500), "request_id": request_id, "body": body},
            "error": None}


def anthropic_line(result: Result) -> dict[str, Any]:
    if result.outcome == "succeeded":
        return {"custom_id": result.custom_id, "result": {"type": "succeeded", "message": result.body}}
    if result.outcome in ("canceled", "expired"):
        return {"custom_id": result.custom_id, "result": {"type": result.outcome}}
    error = result.body
    return {"custom_id": result.custom_id, "result": {"type": "errored", "error": {
        "type": "error", "error": {"type": anthropic_error_type(int(error.get("status", 500))),
                                   "message": error.get("message")}}}}


async def openai_file(store: BatchStore, batch_id: str, *, output: bool) -> AsyncIterator[bytes]:
    outcomes = ("succeeded",) if output else ("errored", "expired", "canceled")
    async for result in store.results(batch_id, outcomes):
        yield orjson.dumps(openai_line(result), option=orjson.OPT_APPEND_NEWLINE)


async def anthropic_results(store: BatchStore, batch_id: str) -> AsyncIterator[bytes]:
    async for result in store.results(batch_id):
        yield orjson.dumps(anthropic_line(result), option=orjson.OPT_APPEND_NEWLINE)


def generated_file(batch: Batch, *, output: bool, size: int) -> dict[str, Any]:
    """The file object of a batch's output or error file (purpose ``batch_output``)."""
    return {"id": output_file_id(batch.id) if output else error_file_id(batch.id), "object": "file", "bytes": size,
            "created_at": int(batch.created_at), "expires_at": None,
            "filename": f"{batch.id}_{'output' if output else 'error'}.jsonl", "purpose": "batch_output",
            "status": "processed", "status_details": None}


async def find_generated(store: BatchStore, account_id: int, file_id: str) -> tuple[Batch, bool] | None:
    """The account's batch whose output (True) or error (False) file
    ``file_id`` is; None if it names none (or a batch not running yet)."""
    named = batch_of_file(file_id)
    if named is None:
        return None
    batch = await store.get(named[0], account_id)
    if batch is None or batch.api != "openai" or batch.status in ("validating", "failed"):
        return None
    return batch, named[1]


async def generated_size(store: BatchStore, batch_id: str, *, output: bool) -> int:
    return sum([len(line) async for line in openai_file(store, batch_id, output=output)])
