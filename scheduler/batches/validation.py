"""What a batch's input must be, checked line by line as it streams.

OpenAI's input file (JSONL): each line ``{"custom_id", "method": "POST",
"url", "body"}``, ``url`` the batch's endpoint, ``custom_id`` unique, the
body a request of that endpoint naming its ``model`` (any model the gateway
routes: one batch may mix models and providers), not streamed; at most
``MAX_LINES`` lines. Anthropic's requests (``{"custom_id", "params"}``)
arrive in the create call's body and are checked alike.

A file's errors name their line (1-based, as an editor shows it); a file
with errors is refused whole, as OpenAI refuses it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from scheduler.batches.store import Line
from schema.anthropic import check_messages_request
from schema.errors import InvalidRequest

MAX_LINES = 50_000  # OpenAI's limit per batch
MAX_ANTHROPIC_REQUESTS = 100_000  # Anthropic's
MAX_LINE_BYTES = 16 * 1024 * 1024  # one request; a line past this is not read whole
MAX_ERRORS = 50  # a file's errors reported, at most
ANTHROPIC_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(slots=True)
class Findings:
    """The errors found so far (OpenAI's ``errors.data`` entries)."""

    errors: list[dict[str, Any]] = field(default_factory=list)
    more: bool = False

    def add(self, message: str, *, line: int | None, param: str | None = None, code: str = "invalid_request") -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"code": code, "message": message, "param": param, "line": line})
        else:
            self.more = True


async def split_lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[tuple[int, bytes | None]]:
    """``(line number, line)`` for each line of the content, 1-based; a line
    longer than ``MAX_LINE_BYTES`` comes as ``None`` (and is not kept)."""
    number, pending, overlong = 0, bytearray(), False
    async for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            number += 1
            if overlong or len(pending) + end - start > MAX_LINE_BYTES:
                yield number, None
            else:
                pending += chunk[start:end]
                yield number, bytes(pending)
            pending.clear()
            overlong = False
            start = end + 1
        if not overlong:
            pending += chunk[start:]
            if len(pending) > MAX_LINE_BYTES:
                pending.clear()
                overlong = True
    if pending or overlong:
        yield number + 1, None if overlong else bytes(pending)


class OpenAIFile:
    """Checks an OpenAI batch input file, a line at a time: ``check`` gives
    each valid request as a ``Line`` (numbered from 0), and ``findings``
    holds the errors."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.findings = Findings()
        self.count = 0
        self._ids: set[str] = set()

    def check(self, number: int, raw: bytes | None) -> Line | None:
        if raw is None:
            self.findings.add(f"Line {number} is longer than {MAX_LINE_BYTES} bytes", line=number)
            return None
        if not raw.strip():
            return None  # blank lines (a trailing one, most often) are not requests
        self.count += 1
        if self.count > MAX_LINES:
            if self.count == MAX_LINES + 1:
                self.findings.add(f"The file has more than {MAX_LINES} requests", line=number, code="too_many_requests")
            return None
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.findings.add(f"Line {number} is not valid JSON", line=number)
            return None
        if not isinstance(request, dict):
            self.findings.add(f"Line {number} is not a JSON object", line=number)
            return None
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > 512 or "\x00" in custom_id:
            self.findings.add(f"Line {number}: `custom_id` must be a string of 1 to 512 characters, without NUL",
                              line=number, param="custom_id")
            return None
        if custom_id in self._ids:
            self.findings.add(f"Line {number}: `custom_id` {custom_id!r} is not unique in the file", line=number,
                              param="custom_id", code="duplicate_custom_id")
            return None
        self._ids.add(custom_id)
        if request.get("method") != "POST":
            self.findings.add(f"Line {number}: `method` must be \"POST\"", line=number, param="method")
            return None
        if request.get("url") != self.endpoint:
            self.findings.add(f"Line {number}: `url` must be the batch's endpoint, {self.endpoint}", line=number,
                              param="url", code="mismatched_endpoint")
            return None
        body = request.get("body")
        if not isinstance(body, dict):
            self.findings.add(f"Line {number}: `body` must be a JSON object", line=number, param="body")
            return None
        problem = request_problem(body)
        if problem is not None:
            self.findings.add(f"Line {number}: {problem[1]}", line=number, param=f"body.{problem[0]}")
            return None
        return Line(self.count - 1, custom_id, body)


def request_problem(body: dict[str, Any]) -> tuple[str, str] | None:
    """What makes a line's request unfit for a batch, as ``(param, message)``."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "model", "`model` must be a non-empty string"
    if body.get("stream") is True:
        return "stream", "batch requests cannot stream"
    return None


def anthropic_requests(requests: object) -> list[Line]:
    """Anthropic's ``requests`` as lines; raises ``ValueError`` naming the
    first thing wrong (the API answers it as an invalid request)."""
    if not isinstance(requests, list) or not requests:
        raise ValueError("`requests` must be a non-empty list")
    if len(requests) > MAX_ANTHROPIC_REQUESTS:
        raise ValueError(f"`requests` may hold at most {MAX_ANTHROPIC_REQUESTS} requests")
    lines: list[Line] = []
    seen: set[str] = set()
    for index, request in enumerate(requests):
        where = f"requests.{index}"
        if not isinstance(request, dict):
            raise ValueError(f"{where}: must be an object")
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not ANTHROPIC_ID.match(custom_id):
            raise ValueError(f"{where}.custom_id: must be 1 to 64 letters, digits, '_' or '-'")
        if custom_id in seen:
            raise ValueError(f"{where}.custom_id: {custom_id!r} is not unique in the batch")
        seen.add(custom_id)
        params = request.get("params")
        if not isinstance(params, dict):
            raise ValueError(f"{where}.params: must be an object")
        try:
            check_messages_request(params)  # what /v1/messages checks
        except InvalidRequest as error:
            raise ValueError(f"{where}.params.{error.message}") from None
        if params.get("stream") is True:
            raise ValueError(f"{where}.params.stream: batch requests cannot stream")
        lines.append(Line(index, custom_id, params))
    return lines
