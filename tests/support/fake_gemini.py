"""A fake Google Gemini API (``generativelanguage.googleapis.com/v1beta``) on
loopback, for tests.

It speaks the real wire protocol: ``POST /v1beta/models/<model>:generateContent``
answers a ``GenerateContentResponse``; ``:streamGenerateContent?alt=sse``
streams one per server-sent event (``data: <json>``, CRLF-framed as Google
frames them), and without ``alt=sse`` answers them as one JSON array; errors
come as ``{"error": {"code", "message", "status"}}`` (plus ``details`` where
Google adds them); ``GET /v1beta/models`` answers Gemini's list shape. Like
the real API it wants the key in ``x-goog-api-key`` (or ``?key=``): without
one it answers 403 PERMISSION_DENIED, with a wrong one 400 INVALID_ARGUMENT
with reason API_KEY_INVALID; a bearer token (how Vertex AI is called) is
accepted too, and a wrong one is 401 UNAUTHENTICATED. Like the real API it
refuses unknown fields ("Invalid JSON payload received. Unknown name …") in
the body, its ``generationConfig``, tools and parts, so a request carrying
``model`` or ``stream`` fails here as it would at Google; and, like Gemini 3,
it refuses a model turn whose function calls lost their thought signature.

It answers ``Echo: <last user text>``, one token per word, cut to
``maxOutputTokens`` words (``MAX_TOKENS``), once per ``candidateCount``. The
first word of the last user text may be a command, as for
``loadtests.fake_upstream``:

- ``fail:<status>`` answers that HTTP status in Gemini's error format
  (``fail:429`` is RESOURCE_EXHAUSTED with ``retry-after: 7`` and a
  ``RetryInfo`` of 7 s);
- ``error:<status>`` streams two words, then an ``{"error": …}`` event, as
  Google does when a stream fails after its 200; without streaming it answers
  that status;
- ``drop`` streams two words, then closes the connection mid-body;
- ``truncate`` streams two words, then ends the body cleanly with no
  ``finishReason``;
- ``hang`` never answers; ``slow`` waits 50 ms before each word;
- ``tool`` answers with a ``functionCall`` of the first declared function,
  signed (``thoughtSignature``, with thinking tokens), when tools were given;
- ``block`` answers a prompt blocked for SAFETY (``promptFeedback``, no
  candidates);
- ``words:<n>`` answers with n words.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

MODELS = (("gemini-fake-flash", "Gemini Fake Flash"), ("gemini-fake-pro", "Gemini Fake Pro"))
TOOL_ARGS = {"city": "Paris", "unit": "celsius"}
# Bytes whose base64 holds `+` and `/`, so a signature's round trip through a call id is really tested.
THOUGHT_SIGNATURE = base64.b64encode(b"fake thought \xfb\xff\xbf signature \xfe").decode()
THOUGHT_TOKENS = 3

STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
                501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
REQUEST_FIELDS = frozenset({"contents", "tools", "toolConfig", "safetySettings", "systemInstruction",
                            "generationConfig", "cachedContent"})
GENERATION_FIELDS = frozenset({
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities",
    "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty",
    "frequencyPenalty", "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "speechConfig",
    "thinkingConfig", "imageConfig", "mediaResolution"})
PART_DATA = frozenset({"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
                       "codeExecutionResult"})
PART_FIELDS = PART_DATA | {"thought", "thoughtSignature", "videoMetadata", "partMetadata"}
DECLARATION_FIELDS = frozenset({"name", "description", "parameters", "parametersJsonSchema", "response",
                                "responseJsonSchema", "behavior"})
CALLING_MODES = frozenset({"AUTO", "ANY", "NONE", "VALIDATED"})


class Refused(Exception):
    """A request the real API would refuse, with its status and message."""

    def __init__(self, status: int, message: str, details: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.details, self.headers = status, message, details, headers


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json; charset=UTF-8",
                    headers=headers)


def _error(refused: Refused) -> Response:
    error: dict[str, Any] = {"code": refused.status, "message": refused.message,
                             "status": STATUS_NAMES.get(refused.status, "UNKNOWN")}
    if refused.details:
        error["details"] = refused.details
    return _json({"error": error}, refused.status, refused.headers)


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\r\n\r\n"


def _unknown(fields: object, known: frozenset[str], where: str) -> None:
    for name in fields if isinstance(fields, dict) else ():
        if name not in known:
            raise Refused(400, f'Invalid JSON payload received. Unknown name "{name}" at \'{where}\': '
                               'Cannot find field.')


def _check_parts(parts: object, where: str) -> None:
    if not isinstance(parts, list) or not parts:
        raise Refused(400, f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.")
    for index, part in enumerate(parts):
        if not isinstance(part, dict):
            raise Refused(400, f"Invalid value at '{where}.parts[{index}]'")
        _unknown(part, PART_FIELDS, f"{where}.parts[{index}]")
        if len(PART_DATA & set(part)) != 1:
            raise Refused(400, f"* GenerateContentRequest.{where}.parts[{index}].data: required oneof field 'data' "
                               "must have one initialized field")


def check_request(body: object) -> None:
    """Refuse what the real API refuses (the part of it the gateway could get wrong)."""
    if not isinstance(body, dict):
        raise Refused(400, "Invalid JSON payload received. Expected an object.")
    _unknown(body, REQUEST_FIELDS, "")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise Refused(400, "* GenerateContentRequest.contents: contents is not specified")
    for index, content in enumerate(contents):
        where = f"contents[{index}]"
        if not isinstance(content, dict):
            raise Refused(400, f"Invalid value at '{where}'")
        _unknown(content, frozenset({"role", "parts"}), where)
        if content.get("role", "user") not in ("user", "model"):
            raise Refused(400, f"Please use a valid role: user, model. ({where})")
        _check_parts(content.get("parts"), where)
        calls = [part for part in content["parts"] if "functionCall" in part]
        if calls and "thoughtSignature" not in calls[0]:
            name = calls[0]["functionCall"].get("name")
            raise Refused(400, f"Function call `{name}` in the {index + 1}. content block is missing a "
                               "`thought_signature`.")
    if "systemInstruction" in body:
        _unknown(body["systemInstruction"], frozenset({"role", "parts"}), "system_instruction")
        _check_parts(body["systemInstruction"].get("parts"), "system_instruction")
    _unknown(body.get("generationConfig"), GENERATION_FIELDS, "generation_config")
    for index, tool in enumerate(body.get("tools") or []):
        _unknown(tool, frozenset({"functionDeclarations", "googleSearch", "codeExecution", "urlContext"}),
                 f"tools[{index}]")
        for position, declaration in enumerate(tool.get("functionDeclarations") or []):
            _unknown(declaration, DECLARATION_FIELDS, f"tools[{index}].function_declarations[{position}]")
    calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if calling and calling.get("mode", "AUTO") not in CALLING_MODES:
        raise Refused(400, f"Invalid value at 'tool_config.function_calling_config.mode' ({calling.get('mode')})")


def _text(content: object) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    return " ".join(p["text"] for p in parts or () if isinstance(p, dict) and isinstance(p.get("text"), str))


class FakeGemini:
    """The ASGI app plus what it saw and said, for tests to inspect: each of
    ``requests`` holds the method, url, headers, raw body, and the answer:
    ``status``, and ``response`` (the JSON body) or ``events`` (each streamed
    event, as it went out). ``url`` is set by whoever serves it; the API's
    base URL is ``url + "/v1beta"``."""

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.url = ""
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(routes=[
            Route("/v1beta/models", self.models, methods=["GET"]),
            Route("/v1beta/models/{target}", self.generate, methods=["POST"]),
        ])

    def _receive(self, request: Request, body: bytes) -> dict[str, Any]:
        record = {"method": request.method, "url": str(request.url), "headers": request.headers, "body": body,
                  "status": None, "response": None, "events": []}
        self.requests.append(record)
        return record

    def _authenticate(self, request: Request) -> None:
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        bearer = request.headers.get("authorization", "")
        if key is None and bearer.startswith("Bearer "):
            if self.api_key is not None and bearer.removeprefix("Bearer ") != self.api_key:
                raise Refused(401, "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                                   "login cookie or other valid authentication credential.")
            return
        if key is None:
            raise Refused(403, "Method doesn't allow unregistered callers (callers without established identity). "
                               "Please use API Key or other form of API consumer identity to call this API.")
        if self.api_key is not None and key != self.api_key:
            raise Refused(400, "API key not valid. Please pass a valid API key.", [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}])

    @staticmethod
    def _answer(record: dict[str, Any], response: Response) -> Response:
        record["status"] = response.status_code
        if not isinstance(response, StreamingResponse):
            record["response"] = orjson.loads(response.body)
        return response

    async def models(self, request: Request) -> Response:
        record = self._receive(request, b"")
        try:
            self._authenticate(request)
        except Refused as refused:
            return self._answer(record, _error(refused))
        listing = {"models": [
            {"name": f"models/{model}", "version": "001", "displayName": name,
             "description": f"{name}, a fake Gemini model for tests.", "inputTokenLimit": 1048576,
             "outputTokenLimit": 8192, "supportedGenerationMethods": ["generateContent", "countTokens"],
             "temperature": 1.0, "topP": 0.95, "topK": 64, "maxTemperature": 2.0}
            for model, name in MODELS]}
        return self._answer(record, _json(listing))

    async def generate(self, request: Request) -> Response:
        record = self._receive(request, await request.body())
        try:
            self._authenticate(request)
            return self._answer(record, await self._generate(request, record))
        except Refused as refused:
            return self._answer(record, _error(refused))

    async def _generate(self, request: Request, record: dict[str, Any]) -> Response:
        model, _, method = request.path_params["target"].partition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            raise Refused(404, f"Method not found: {method}")
        if model not in {known for known, _ in MODELS}:
            raise Refused(404, f"models/{model} is not found for API version v1beta, or is not supported for "
                               f"{method}. Call ListModels to see the list of available models and their "
                               "supported methods.")
        try:
            body = orjson.loads(record["body"])
        except orjson.JSONDecodeError:
            raise Refused(400, "Invalid JSON payload received. Unexpected token.") from None
        check_request(body)
        contents = body["contents"]
        said = next((_text(c) for c in reversed(contents) if c.get("role", "user") == "user"), "")
        first, *rest = said.split() or [""]
        command, _, argument = first.partition(":")
        streamed = method == "streamGenerateContent"
        if command == "fail" and argument.isdigit():
            status = int(argument)
            message = f"fake failure {status}" + (f": {' '.join(rest)}" if rest else "")
            if status == 429:
                raise Refused(status, message, [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                                 "retryDelay": "7s"}], {"retry-after": "7"})
            raise Refused(status, message)
        if command == "error" and argument.isdigit() and not streamed:
            raise Refused(int(argument), f"fake error {argument}")
        if command == "hang":
            await asyncio.sleep(3600)
        words = ["w"] * int(argument) if command == "words" and argument.isdigit() else said.split()
        answer = _Answer(body, model, words)
        if command == "block":
            events = [answer.blocked()]
        elif command == "tool" and answer.tool is not None:
            events = [answer.call()]
        else:
            events = answer.words()
        if not streamed:
            return _json(answer.merged(events))
        if request.query_params.get("alt") != "sse":
            return _json(events)
        record["events"] = []
        return StreamingResponse(self._stream(events, command, argument, record["events"]),
                                 media_type="text/event-stream", headers={"cache-control": "no-cache"})

    @staticmethod
    async def _stream(events: list[dict[str, Any]], command: str, argument: str, sent: list[dict[str, Any]],
                      ) -> AsyncIterator[bytes]:
        for position, event in enumerate(events):
            if command == "slow":
                await asyncio.sleep(0.05)
            if position == 2:
                # Commands that cut the stream act once two words went out.
                if command == "drop":
                    raise ConnectionResetError("fake Gemini dropped the stream")
                if command == "truncate":
                    return
                if command == "error":
                    status = int(argument) if argument.isdigit() else 500
                    failure = {"error": {"code": status, "message": f"fake error {status}",
                                         "status": STATUS_NAMES.get(status, "UNKNOWN")}}
                    sent.append(failure)
                    yield _sse(failure)
                    return
            sent.append(event)
            yield _sse(event)


class _Answer:
    """What the fake says to one request, as stream events; a whole answer
    is the events merged."""

    def __init__(self, body: dict[str, Any], model: str, words: list[str]) -> None:
        config = body.get("generationConfig") or {}
        self.model = model
        self.response_id = uuid.uuid4().hex[:22]
        self.candidates = int(config.get("candidateCount") or 1)
        self.reply = ["Echo:", *words]
        self.finish = "STOP"
        limit = config.get("maxOutputTokens")
        if isinstance(limit, int) and len(self.reply) > limit:
            self.reply, self.finish = self.reply[:limit], "MAX_TOKENS"
        system = _text(body.get("systemInstruction"))
        self.prompt_tokens = sum(len(_text(c).split()) for c in body["contents"]) + len(system.split())
        declarations = [d for tool in body.get("tools") or [] for d in tool.get("functionDeclarations") or []]
        self.tool: str | None = declarations[0]["name"] if declarations else None

    def _event(self, parts: list[dict[str, Any]], finish: str | None, usage: dict[str, int]) -> dict[str, Any]:
        candidates = []
        for index in range(self.candidates):
            candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
            if finish:
                candidate["finishReason"] = finish
            if index:  # Google leaves out an index of 0
                candidate["index"] = index
            candidates.append(candidate)
        return {"candidates": candidates, "usageMetadata": usage, "modelVersion": self.model,
                "responseId": self.response_id}

    def _usage(self, output: int, thoughts: int = 0) -> dict[str, int]:
        usage = {"promptTokenCount": self.prompt_tokens, "totalTokenCount": self.prompt_tokens + output + thoughts}
        if output:
            usage["candidatesTokenCount"] = output
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        return usage

    def words(self) -> list[dict[str, Any]]:
        last = len(self.reply) - 1
        return [self._event([{"text": word if position == 0 else f" {word}"}],
                            self.finish if position == last else None,
                            self._usage(len(self.reply) * self.candidates) if position == last else self._usage(0))
                for position, word in enumerate(self.reply)]

    def call(self) -> dict[str, Any]:
        part = {"functionCall": {"name": self.tool, "args": TOOL_ARGS}, "thoughtSignature": THOUGHT_SIGNATURE}
        return self._event([part], "STOP", self._usage(len(TOOL_ARGS) * self.candidates, THOUGHT_TOKENS))

    def blocked(self) -> dict[str, Any]:
        return {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]},
                "usageMetadata": self._usage(0), "modelVersion": self.model, "responseId": self.response_id}

    @staticmethod
    def merged(events: list[dict[str, Any]]) -> dict[str, Any]:
        """The events as one ``GenerateContentResponse``: each candidate's parts joined."""
        whole = {**events[-1]}
        if "candidates" in whole:
            whole["candidates"] = []
            for position, candidate in enumerate(events[-1]["candidates"]):
                text = "".join(p.get("text", "") for e in events for p in e["candidates"][position]["content"]["parts"])
                parts = [p for p in candidate["content"]["parts"] if "text" not in p] or [{"text": text}]
                whole["candidates"].append({**candidate, "content": {"parts": parts, "role": "model"}})
        return whole
