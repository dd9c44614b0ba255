"""A fake Anthropic Messages API on loopback, for tests.

It speaks the real wire protocol: ``POST /v1/messages`` answers a ``message``
object, or with ``"stream": true`` server-sent events framed ``event: <type>``
+ ``data: <json>`` (``message_start`` with the input tokens, the text block's
``content_block_start``, a ``ping``, ``text_delta``s, ``content_block_stop``,
``message_delta`` with the stop reason and the cumulative output tokens,
``message_stop``); errors come as ``{"type": "error", "error": {"type",
"message"}}``; ``GET /v1/models`` answers Anthropic's list shape. Like the real
API it wants ``x-api-key`` (or ``Authorization: Bearer``, as the official SDK
sends) and an ``anthropic-version`` header.

It answers ``Echo: <last user text>``, one token per word, cut to
``max_tokens`` words (``stop_reason: max_tokens``). The first word of the last
user message may be a command, as for ``loadtests.fake_upstream``:

- ``fail:<status>`` answers that HTTP status in Anthropic's error format,
  quoting the rest of the message (``fail:429`` and ``fail:529``, overloaded,
  add ``retry-after: 7``);
- ``error:<type>`` streams two words, then an ``error`` event of that type
  (``overloaded_error``, ``rate_limit_error`` …), as the API does when it fails
  mid-stream; without streaming it answers that error's HTTP status;
- ``drop`` streams two words, then closes the connection mid-body;
- ``truncate`` streams two words, then ends the body cleanly without
  ``message_stop``;
- ``hang`` never answers; ``slow`` waits 50 ms before each word;
- ``stall:<n>`` streams n words, then sends nothing more until its client
  leaves (``left`` then lists the request's text);
- ``tool`` answers with a ``tool_use`` block for the first tool when ``tools``
  were given (streamed as ``input_json_delta`` fragments);
- ``words:<n>`` answers with n words.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

MODELS = (("claude-fake-small", "Claude Fake Small"), ("claude-fake-large", "Claude Fake Large"))
TOOL_USE_ID = "toolu_fake1"
TOOL_INPUT = {"city": "Paris", "unit": "celsius"}
# The tool's input as streamed: 5-character fragments, one token each.
_TOOL_JSON = orjson.dumps(TOOL_INPUT).decode()
TOOL_FRAGMENTS = [_TOOL_JSON[at:at + 5] for at in range(0, len(_TOOL_JSON), 5)]

# The API's documented error types, by the HTTP status that carries them.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 504: "timeout_error", 529: "overloaded_error"}
ERROR_STATUS = {kind: status for status, kind in ERROR_TYPES.items()}


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers={"request-id": f"req_fake{uuid.uuid4().hex[:20]}", **(headers or {})})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return _json({"type": "error", "error": {"type": kind, "message": message}}, status, headers)


def _sse(data: dict[str, Any]) -> bytes:
    return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


class FakeAnthropic:
    """The ASGI app plus what it saw and said, for tests to inspect: each of
    ``requests`` holds the method, url, headers (all values of each name),
    raw body, and the answer: ``status``, and ``response`` (the JSON body) or
    ``events`` (each streamed event's data, as it went out). ``url`` is set
    by whoever serves it."""

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.url = ""
        self.requests: list[dict[str, Any]] = []
        self.left: list[str] = []  # the text of each stream whose client went before its end
        self.app = Starlette(routes=[
            Route("/v1/messages", self.messages, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
        ])

    async def _receive(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        """Record the request; its record, and the real API's answer to
        missing credentials or version."""
        record = {"method": request.method, "url": str(request.url), "headers": request.headers,
                  "body": await request.body(), "status": None, "response": None, "events": []}
        self.requests.append(record)
        given = request.headers.get("x-api-key")
        bearer = request.headers.get("authorization", "")
        if given is None and bearer.startswith("Bearer "):
            given = bearer.removeprefix("Bearer ")
        if given is None:
            return record, _error(401, "x-api-key header is required")
        if self.api_key is not None and given != self.api_key:
            return record, _error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return record, _error(400, "anthropic-version: header is required")
        return record, None

    @staticmethod
    def _answer(record: dict[str, Any], response: Response) -> Response:
        record["status"] = response.status_code
        if not isinstance(response, StreamingResponse):
            record["response"] = orjson.loads(response.body)
        return response

    async def models(self, request: Request) -> Response:
        record, refused = await self._receive(request)
        data = [{"type": "model", "id": model, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}
                for model, name in MODELS]
        listing = {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        return self._answer(record, refused or _json(listing))

    async def messages(self, request: Request) -> Response:
        record, refused = await self._receive(request)
        return self._answer(record, refused or await self._messages(record))

    async def _messages(self, record: dict[str, Any]) -> Response:
        try:
            body = orjson.loads(record["body"])
        except orjson.JSONDecodeError:
            return _error(400, "There was an error parsing the body of your request")
        if not isinstance(body, dict):
            return _error(400, "The request body is not a JSON object")
        for field in ("model", "max_tokens", "messages"):
            if field not in body:
                return _error(400, f"{field}: Field required")
        messages = body["messages"]
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            return _error(400, "max_tokens: Input should be a valid integer, at least 1")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return _error(400, "messages: Input should be a valid list of messages")
        said = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        # The first word may be a command: `drop`, `fail:503`, `words:20` …
        first, *rest = said.split() or [""]
        command, _, argument = first.partition(":")
        if command == "fail" and argument.isdigit():
            status = int(argument)
            message = f"fake failure {status}" + (f": {' '.join(rest)}" if rest else "")
            return _error(status, message, {"retry-after": "7"} if status in (429, 529) else None)
        if command == "error" and not body.get("stream"):
            return _error(ERROR_STATUS.get(argument, 500), f"fake {argument}")
        if command == "hang":
            await asyncio.sleep(3600)
        words = ["w"] * int(argument) if command in ("words", "stall") else said.split()
        reply = ["Echo:", *words]
        stop_reason = "end_turn"
        if len(reply) > body["max_tokens"]:
            reply, stop_reason = reply[:body["max_tokens"]], "max_tokens"
        system = body.get("system")
        input_tokens = sum(len(_text(m.get("content")).split()) for m in messages) + len(_text(system).split())
        tools = body.get("tools") if command == "tool" else None
        tool = tools[0].get("name") if isinstance(tools, list) and tools and isinstance(tools[0], dict) else None
        message = {
            "id": f"msg_fake{uuid.uuid4().hex[:20]}", "type": "message", "role": "assistant", "model": body["model"],
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                      "output_tokens": 1},
        }
        if body.get("stream"):
            events = self._tool_events(tool) if tool else self._text_events(reply, stop_reason, command, argument)
            return StreamingResponse(self._stream(message, events, record["events"], lambda: self.left.append(said)),
                                     media_type="text/event-stream; charset=utf-8",
                                     headers={"request-id": f"req_fake{uuid.uuid4().hex[:20]}",
                                              "cache-control": "no-cache"})
        if tool:
            content: list[dict[str, Any]] = [{"type": "tool_use", "id": TOOL_USE_ID, "name": tool, "input": TOOL_INPUT}]
            stop_reason, output_tokens = "tool_use", len(TOOL_FRAGMENTS)
        else:
            content, output_tokens = [{"type": "text", "text": " ".join(reply)}], len(reply)
        return _json({**message, "content": content, "stop_reason": stop_reason,
                      "usage": {**message["usage"], "output_tokens": output_tokens}})

    @staticmethod
    async def _stream(message: dict[str, Any], blocks: AsyncIterator[dict[str, Any]], sent: list[dict[str, Any]],
                      left: Callable[[], None]) -> AsyncIterator[bytes]:
        """``message_start``, then the content blocks' events, which end with
        the ``message_delta`` and ``message_stop`` unless a command cut them."""
        try:
            start = {"type": "message_start", "message": message}
            sent.append(start)
            yield _sse(start)
            async for event in blocks:
                sent.append(event)
                yield _sse(event)
        except (asyncio.CancelledError, GeneratorExit):  # the client went (a `drop` is the fake's own doing)
            left()
            raise

    @staticmethod
    async def _text_events(reply: list[str], stop_reason: str, command: str, argument: str,
                           ) -> AsyncIterator[dict[str, Any]]:
        yield {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        yield {"type": "ping"}
        for position, word in enumerate(reply):
            if command == "slow":
                await asyncio.sleep(0.05)
            yield {"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": word if position == 0 else f" {word}"}}
            if position == min(1, len(reply) - 1):
                # Commands that cut the stream act once two words went out.
                if command == "drop":
                    raise ConnectionResetError("fake Anthropic dropped the stream")
                if command == "truncate":
                    return
                if command == "error":
                    yield {"type": "error", "error": {"type": argument, "message": f"fake {argument}"}}
                    return
        if command == "stall":
            await asyncio.sleep(3600)  # cancelled when the client leaves
        yield {"type": "content_block_stop", "index": 0}
        yield {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
               "usage": {"output_tokens": len(reply)}}
        yield {"type": "message_stop"}

    @staticmethod
    async def _tool_events(name: str) -> AsyncIterator[dict[str, Any]]:
        block = {"type": "tool_use", "id": TOOL_USE_ID, "name": name, "input": {}}
        yield {"type": "content_block_start", "index": 0, "content_block": block}
        yield {"type": "ping"}
        # The API's first fragment is often empty; clients must cope.
        for fragment in ["", *TOOL_FRAGMENTS]:
            yield {"type": "content_block_delta", "index": 0,
                   "delta": {"type": "input_json_delta", "partial_json": fragment}}
        yield {"type": "content_block_stop", "index": 0}
        yield {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
               "usage": {"output_tokens": len(TOOL_FRAGMENTS)}}
        yield {"type": "message_stop"}
