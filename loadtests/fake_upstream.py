"""A fake OpenAI-compatible provider on loopback, for tests and benchmarks.

It speaks the real wire protocol (``/v1/chat/completions`` JSON and SSE with
``[DONE]`` and ``stream_options.include_usage``, ``/v1/models``) and answers
deterministically: ``Echo: <last user message>``, one token per word. The
last user message can command a failure, so tests can see each one:

- ``fail:<status>`` answers that HTTP status with an OpenAI error body
  (``fail:429`` adds ``retry-after: 7``);
- ``drop`` streams two chunks, then closes the connection without ``[DONE]``;
- ``hang`` never answers; ``slow`` waits 50 ms between chunks;
- ``tool`` answers with a streamed tool call when ``tools`` were given;
- ``words:<n>`` answers with n words (benchmarks);
- ``notobject`` answers 200 with a JSON array instead of a completion.

Run alone: ``python -m loadtests.fake_upstream --port 9901``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": "fake_error", "param": None, "code": str(status)}}
    return JSONResponse(body, status_code=status, headers=headers)


class FakeUpstream:
    """The ASGI app plus what it saw, for tests to inspect."""

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
            ]
        )

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "fake"} for name in ("fake-small", "fake-large")
        ]})

    async def chat(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append({"headers": dict(request.headers), "body": body})
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided")
        messages = body.get("messages") or []
        said = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        # The first word may be a command: `drop`, `fail:503`, `words:20` …
        command, _, argument = (said.split() or [""])[0].partition(":")
        if command == "fail":
            status = int(argument)
            return _error(status, f"fake failure {status}", {"retry-after": "7"} if status == 429 else None)
        if command == "notobject":
            return JSONResponse([1, 2, 3])
        if command == "hang":
            await asyncio.sleep(3600)
        words = said.split() if command != "words" else ["w"] * int(argument)
        reply = ["Echo:", *words]
        prompt_tokens = sum(len(_text(m.get("content")).split()) for m in messages)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(reply), "total_tokens": prompt_tokens + len(reply)}
        completion_id = f"chatcmpl-fake{int(time.time() * 1e6)}"
        model = body.get("model")
        tool_call = command == "tool" and bool(body.get("tools"))
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": " ".join(reply)}
            finish = "stop"
            if tool_call:
                message = {"role": "assistant", "content": None, "tool_calls": [_tool_call(body)]}
                finish = "tool_calls"
            return JSONResponse({
                "id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": usage, "system_fingerprint": "fake",
            })
        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        return StreamingResponse(
            self._stream(completion_id, model, reply, usage, include_usage, command, tool_call, body),
            media_type="text/event-stream",
        )

    async def _stream(self, completion_id, model, reply, usage, include_usage, command, tool_call, body):  # type: ignore[no-untyped-def]
        base = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            chunk = {**base, "choices": choices, **extra}
            if include_usage and "usage" not in extra:
                chunk["usage"] = None
            return b"data: " + orjson.dumps(chunk) + b"\n\n"

        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        if tool_call:
            call = _tool_call(body)
            arguments = call["function"]["arguments"]
            yield event([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                         "function": {"name": call["function"]["name"], "arguments": ""}}]}, "finish_reason": None}])
            for start in range(0, len(arguments), 5):
                yield event([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": arguments[start:start + 5]}}]},
                              "finish_reason": None}])
            yield event([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])
        else:
            for position, word in enumerate(reply):
                if command == "drop" and position == 2:
                    raise ConnectionResetError("fake upstream dropped the stream")
                if command == "slow":
                    await asyncio.sleep(0.05)
                yield event([{"index": 0, "delta": {"content": word if position == 0 else f" {word}"}, "finish_reason": None}])
            yield event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if include_usage:
            yield event([], usage=usage)
        yield b"data: [DONE]\n\n"


def _tool_call(body: dict[str, Any]) -> dict[str, Any]:
    name = body["tools"][0]["function"]["name"]
    return {"id": "call_fake1", "type": "function", "function": {"name": name, "arguments": '{"city": "Paris", "unit": "celsius"}'}}


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9901)
    parser.add_argument("--api-key")
    arguments = parser.parse_args()
    upstream = FakeUpstream(arguments.api_key)
    uvicorn.run(upstream.app, host=arguments.host, port=arguments.port, log_level="warning",
                loop="uvloop", http="httptools", access_log=False)


if __name__ == "__main__":
    main()
