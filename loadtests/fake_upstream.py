"""A fake OpenAI-compatible provider on loopback, for tests and benchmarks.

It speaks the real wire protocol (``/v1/chat/completions`` JSON and SSE with
``[DONE]`` and ``stream_options.include_usage``, ``/v1/embeddings``,
``/v1/images/generations``, ``/v1/models``) and answers deterministically:
``Echo: <last user message>``, one token per word; embeddings are unit
vectors drawn from a hash of each input (8 dimensions unless ``dimensions``
says otherwise; ``encoding_format: base64`` gives little-endian float32s);
images are a 1-pixel PNG, with GPT Image usage (272 output tokens an image)
when the model id starts ``gpt-image``, as a URL (a ``data:`` URL) or
``b64_json`` like DALL·E otherwise. The last user message (the first
embeddings input, the image prompt) can command a failure, so tests can see
each one:

- ``fail:<status>`` answers that HTTP status with an OpenAI error body
  (``fail:429`` adds ``retry-after: 7``; ``fail:<status>:<seconds>`` sends
  that ``retry-after``);
- ``flaky:<n>:<status>[:<seconds>]`` fails like ``fail`` the first n times
  this upstream sees the same text, then answers;
- ``drop`` streams two chunks, then closes the connection without ``[DONE]``;
- ``hang`` never answers (until its client leaves); ``slow`` waits 50 ms
  between chunks;
- ``stall:<n>`` streams n words, then sends nothing more until its client
  leaves;
- ``tool`` answers with a streamed tool call when ``tools`` were given;
- ``words:<n>`` answers with n words (benchmarks);
- ``pace:<n>:<first_ms>:<every_ms>`` answers with n words, streamed the
  first after ``first_ms`` and each next one ``every_ms`` later, as a
  provider's time to first token and decoding speed (benchmarks; a JSON
  answer waits as long in all); ``tick:<n>`` is n words one a second, for
  many long-open streams;
- ``usage:<prompt>:<completion>`` (chat; embeddings: ``usage:<prompt>``)
  reports that usage whatever it answered, as a provider that miscounts or
  ignores ``max_tokens`` would;
- ``notobject`` answers 200 with a JSON array instead of a completion;
- ``nousage`` (embeddings, images) answers without ``usage``.

A command ending ``@<name>`` is obeyed only by the upstream of that
``name`` (others answer it normally), so one of several providers can fail
while the others work: ``fail:500@primary``.

``left`` lists the text (the last user message) of each request whose
client closed the connection before the answer was complete, as the
gateway does when it cancels a job.

Run alone: ``python -m loadtests.fake_upstream --port 9901``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import math
import struct
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


# A 1x1 white PNG: what every fake image is.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4//8/AAX+Av4N70a4AAAAAElFTkSuQmCC")
EMBEDDING_DIMENSIONS = 8
MAX_EMBEDDING_DIMENSIONS = 3072  # OpenAI's largest embedding model's: a request asking more is refused
IMAGE_OUTPUT_TOKENS = 272  # gpt-image-1, low quality, 1024x1024


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": "fake_error", "param": None, "code": str(status)}}
    return JSONResponse(body, status_code=status, headers=headers)


class FakeUpstream:
    """The ASGI app plus what it saw, for tests to inspect."""

    def __init__(self, api_key: str | None = None, *, name: str | None = None, record: bool = True) -> None:
        self.api_key = api_key
        self.name = name
        # Run alone (benchmarks), nobody reads them: keeping every request
        # would make the garbage collector's pauses grow with the run.
        self.record = record
        self.requests: list[dict[str, Any]] = []
        self.listings = 0  # GET /v1/models calls (health probes, catalog refreshes)
        self.completed: list[str] = []  # the last user message of each stream that reached [DONE]
        self.left: list[str] = []  # requests whose client went before the answer ended
        self._seen: dict[str, int] = {}  # text -> times seen, for `flaky`
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
                Route("/v1/images/generations", self.images, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
            ]
        )

    async def models(self, request: Request) -> Response:
        self.listings += 1
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "fake"} for name in ("fake-small", "fake-large")
        ]})

    async def _received(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        """The request's body, recorded; and the answer, when the key is wrong."""
        body = orjson.loads(await request.body())
        if self.record:
            self.requests.append({"headers": dict(request.headers), "body": body})
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return body, _error(401, "Incorrect API key provided")
        return body, None

    def _command(self, text: str) -> tuple[str, str]:
        """The command in the text's first word, if it is addressed to this
        upstream (or to none): ``flaky`` becomes ``fail`` while it lasts."""
        first, _, addressee = (text.split() or [""])[0].partition("@")
        if addressee not in ("", self.name):
            return "", ""
        command, _, argument = first.partition(":")
        if command == "flaky":
            times, _, argument = argument.partition(":")
            self._seen[text] = self._seen.get(text, 0) + 1
            command = "fail" if self._seen[text] <= int(times) else ""
        return command, argument

    async def _obey(self, command: str, argument: str, request: Request, said: str) -> Response | None:
        """The commands every endpoint shares: `fail:<status>[:<retry-after>]`, `notobject`, `hang`."""
        if command == "fail":
            status, _, retry_after = argument.partition(":")
            retry_after = retry_after or ("7" if status == "429" else "")
            return _error(int(status), f"fake failure {status}", {"retry-after": retry_after} if retry_after else None)
        if command == "notobject":
            return JSONResponse([1, 2, 3])
        if command == "hang":
            # The body was read: the next message is the client's leaving.
            while (await request.receive())["type"] != "http.disconnect":
                pass
            self.left.append(said)
            return Response(status_code=499)
        return None

    async def chat(self, request: Request) -> Response:
        body, refused = await self._received(request)
        if refused is not None:
            return refused
        messages = body.get("messages") or []
        said = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        # The first word may be a command: `drop`, `fail:503`, `words:20` …
        command, argument = self._command(said)
        if (commanded := await self._obey(command, argument, request, said)) is not None:
            return commanded
        counted = command in ("words", "stall", "pace", "tick")
        words = ["w"] * int(argument.partition(":")[0]) if counted else said.split()
        pacing = _pacing(command, argument)
        reply = ["Echo:", *words]
        prompt_tokens = sum(len(_text(m.get("content")).split()) for m in messages)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(reply),
                 "total_tokens": prompt_tokens + len(reply)}
        if command == "usage":
            usage = _reported(argument)
        completion_id = f"chatcmpl-fake{int(time.time() * 1e6)}"
        model = body.get("model")
        tool_call = command == "tool" and bool(body.get("tools"))
        if not body.get("stream"):
            if pacing is not None:  # the whole answer takes as long as its stream would
                await asyncio.sleep(pacing[0] + pacing[1] * (len(reply) - 1))
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
            self._stream(completion_id, model, reply, usage, include_usage, command, tool_call, body, said, pacing),
            media_type="text/event-stream",
        )

    async def embeddings(self, request: Request) -> Response:
        body, refused = await self._received(request)
        if refused is not None:
            return refused
        given = body.get("input")
        inputs = [given] if isinstance(given, str) or (given and isinstance(given[0], int)) else list(given or [])
        first = inputs[0] if inputs and isinstance(inputs[0], str) else ""
        command, argument = self._command(first)
        if (commanded := await self._obey(command, argument, request, first)) is not None:
            return commanded
        dimensions = body.get("dimensions") or EMBEDDING_DIMENSIONS
        if not isinstance(dimensions, int) or not 1 <= dimensions <= MAX_EMBEDDING_DIMENSIONS:
            return _error(400, f"dimensions must be from 1 to {MAX_EMBEDDING_DIMENSIONS}")
        data = []
        for index, text in enumerate(inputs):
            vector = _unit_vector(str(text), dimensions)
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(len(text.split()) if isinstance(text, str) else len(text) for text in inputs)
        answer: dict[str, Any] = {"object": "list", "data": data, "model": body.get("model")}
        if command == "usage":
            tokens = _reported(argument)["prompt_tokens"]
        if command != "nousage":
            answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse(answer)

    async def images(self, request: Request) -> Response:
        body, refused = await self._received(request)
        if refused is not None:
            return refused
        prompt = str(body.get("prompt") or "")
        command, argument = self._command(prompt)
        if (commanded := await self._obey(command, argument, request, prompt)) is not None:
            return commanded
        count = body.get("n") or 1
        encoded = base64.b64encode(PNG).decode()
        gpt_image = str(body.get("model")).startswith("gpt-image")
        answer: dict[str, Any] = {"created": int(time.time())}
        if gpt_image:
            answer["data"] = [{"b64_json": encoded} for _ in range(count)]
            words = len(prompt.split())
            if command != "nousage":
                answer["usage"] = {"input_tokens": words, "output_tokens": IMAGE_OUTPUT_TOKENS * count,
                                   "total_tokens": words + IMAGE_OUTPUT_TOKENS * count,
                                   "input_tokens_details": {"text_tokens": words, "image_tokens": 0}}
        elif body.get("response_format") == "b64_json":
            answer["data"] = [{"b64_json": encoded, "revised_prompt": prompt} for _ in range(count)]
        else:
            image = {"url": f"data:image/png;base64,{encoded}", "revised_prompt": prompt}
            answer["data"] = [image for _ in range(count)]
        return JSONResponse(answer)

    async def _stream(self, completion_id, model, reply, usage, include_usage, command, tool_call, body, said, pacing):  # type: ignore[no-untyped-def]
        try:
            async for chunk in self._chunks(completion_id, model, reply, usage, include_usage, command, tool_call, body,
                                            pacing):
                yield chunk
        except (asyncio.CancelledError, GeneratorExit):  # the client went (a `drop` is the fake's own doing)
            self.left.append(said)
            raise

    async def _chunks(self, completion_id, model, reply, usage, include_usage, command, tool_call, body, pacing):  # type: ignore[no-untyped-def]
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
                piece = {"index": 0, "function": {"arguments": arguments[start:start + 5]}}
                yield event([{"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}])
            yield event([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])
        else:
            for position, word in enumerate(reply):
                if command == "drop" and position == 2:
                    raise ConnectionResetError("fake upstream dropped the stream")
                if command == "slow":
                    await asyncio.sleep(0.05)
                elif pacing is not None:
                    await asyncio.sleep(pacing[0] if position == 0 else pacing[1])
                delta = {"content": word if position == 0 else f" {word}"}
                yield event([{"index": 0, "delta": delta, "finish_reason": None}])
            if command == "stall":
                await asyncio.sleep(3600)  # cancelled when the client leaves
            yield event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if include_usage:
            yield event([], usage=usage)
        yield b"data: [DONE]\n\n"
        self.completed.append(_text(next((m.get("content") for m in reversed(body.get("messages") or [])
                                           if m.get("role") == "user"), "")))


def _pacing(command: str, argument: str) -> tuple[float, float] | None:
    """Seconds to the first word and between words, for ``pace`` and ``tick``."""
    if command == "tick":
        return 1.0, 1.0
    if command == "pace":
        _, first_ms, every_ms = argument.split(":")
        return int(first_ms) / 1000, int(every_ms) / 1000
    return None


def _reported(argument: str) -> dict[str, int]:
    """The usage a ``usage:<prompt>[:<completion>]`` command asks to report."""
    prompt, _, completion = argument.partition(":")
    counts = {"prompt_tokens": int(prompt), "completion_tokens": int(completion or 0)}
    return {**counts, "total_tokens": counts["prompt_tokens"] + counts["completion_tokens"]}


def _unit_vector(text: str, dimensions: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    values = [digest[i % len(digest)] - 127.5 for i in range(dimensions)]
    norm = math.sqrt(sum(value * value for value in values))
    return [value / norm for value in values]


def _tool_call(body: dict[str, Any]) -> dict[str, Any]:
    name = body["tools"][0]["function"]["name"]
    arguments = '{"city": "Paris", "unit": "celsius"}'
    return {"id": "call_fake1", "type": "function", "function": {"name": name, "arguments": arguments}}


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9901)
    parser.add_argument("--api-key")
    arguments = parser.parse_args()
    upstream = FakeUpstream(arguments.api_key, record=False)
    uvicorn.run(upstream.app, host=arguments.host, port=arguments.port, log_level="warning",
                loop="uvloop", http="httptools", access_log=False)


if __name__ == "__main__":
    main()
