"""Streams, Anthropic events <-> OpenAI ``chat.completion.chunk`` objects,
mapped as whole answers are (``answers``): one translator each way, fed one
upstream event at a time. A stream that cannot be expressed, or that breaks
its own protocol (content before its start, after its end, a tool call
renamed mid-way), raises ``UpstreamError`` rather than reach the client
smaller."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from schema.errors import UpstreamError
from schema.translate.anthropic.answers import FINISH_FROM_ANTHROPIC, stop_reason, tool_input
from schema.translate.anthropic.checks import JSON, json_text
from schema.translate.anthropic.usage import Tokens


def _stream_error(event: JSON) -> UpstreamError:
    error = found if isinstance(found := event.get("error"), dict) else {}
    message = error.get("message") or "the provider's stream failed"
    return UpstreamError(str(message), status=429 if error.get("type") == "rate_limit_error" else 502)


class StreamToOpenAI:
    """Anthropic stream events -> ``chat.completion.chunk`` objects, ending
    with a usage chunk (``choices: []``).

    ``ping`` and event types this module does not know yield nothing
    (Anthropic may add events); ``error`` raises ``UpstreamError``."""

    def __init__(self, *, model: str) -> None:
        self.model = model
        self._base: JSON | None = None
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
        self._tokens = Tokens()
        self._finished = False
        self._usage_sent = False

    def _chunk(self, delta: JSON, finish_reason: str | None = None) -> JSON:
        assert self._base is not None
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return {**self._base, "choices": [choice]}

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "error":
            raise _stream_error(event)
        if kind == "message_start":
            message = found if isinstance(found := event.get("message"), dict) else {}
            self._tokens.read_anthropic(message.get("usage"))
            self._base = {"id": message.get("id") or f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
                          "created": int(time.time()), "model": self.model}
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind not in ("content_block_start", "content_block_delta", "message_delta", "message_stop"):
            return []
        if self._base is None:
            raise UpstreamError(f"the provider's stream sent {kind!r} before message_start")
        if kind == "content_block_start":
            return self._start(event.get("index"), event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._delta(event.get("index"), event.get("delta") or {})
        if kind == "message_delta":
            self._tokens.read_anthropic(event.get("usage"))
            reason = (event.get("delta") or {}).get("stop_reason") or "end_turn"
            self._finished = True
            return [self._chunk({}, FINISH_FROM_ANTHROPIC.get(reason, "stop"))]
        return self._usage_chunk()

    def _start(self, index: object, block: JSON) -> list[JSON]:
        kind = block.get("type")
        if kind == "text":
            return [self._chunk({"content": block["text"]})] if block.get("text") else []
        if kind == "thinking":
            return [self._chunk({"reasoning_content": block["thinking"]})] if block.get("thinking") else []
        if kind == "redacted_thinking":
            return []
        if kind == "tool_use" and isinstance(index, int):
            self._tools[index] = position = len(self._tools)
            # The API starts a tool_use with an empty input and streams it as input_json_delta.
            arguments = json_text(block["input"]) if block.get("input") else ""
            call = {"index": position, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments}}
            return [self._chunk({"tool_calls": [call]})]
        raise UpstreamError(f"the provider's stream holds a {kind!r} block, which chat completions cannot express")

    def _delta(self, index: object, delta: JSON) -> list[JSON]:
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta.get("text") or ""})]
        if kind == "thinking_delta":
            return [self._chunk({"reasoning_content": delta.get("thinking") or ""})]
        if kind == "input_json_delta":
            if index not in self._tools:
                raise UpstreamError("the provider's stream sent tool input outside a tool_use block")
            fragment = delta.get("partial_json") or ""
            call = {"index": self._tools[index], "function": {"arguments": fragment}}
            return [self._chunk({"tool_calls": [call]})] if fragment else []
        if kind in ("signature_delta", "citations_delta"):
            return []
        raise UpstreamError(f"the provider's stream holds a {kind!r} delta, which chat completions cannot express")

    def _usage_chunk(self) -> list[JSON]:
        if self._usage_sent:
            return []
        self._usage_sent = True
        assert self._base is not None
        return [{**self._base, "choices": [], "usage": self._tokens.openai()}]

    def finish(self) -> list[dict[str, Any]]:
        if self._base is None or not self._finished:
            raise UpstreamError("the provider's stream ended before its stop reason")
        return self._usage_chunk()


@dataclass
class _ToolBlock:
    index: int  # the Anthropic content block's
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)


class StreamFromOpenAI:
    """``chat.completion.chunk`` objects -> Anthropic stream events, from
    ``message_start`` to ``message_stop``.

    OpenAI reports usage in a chunk after the one with ``finish_reason``, so
    ``message_delta`` and ``message_stop`` wait for that chunk or ``finish``."""

    def __init__(self, *, model: str) -> None:
        self.model = model
        self._started = False
        self._blocks = 0  # content blocks started
        self._text_open = False
        self._tool: _ToolBlock | None = None  # the open tool_use block
        self._tools: dict[int, _ToolBlock] = {}  # OpenAI tool call index -> its block
        self._finish: object = None
        self._refused = False
        self._tokens: Tokens | None = None
        self._done = False

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if self._done:
            if any((choice.get("delta") or {}) for choice in chunk.get("choices") or ()):
                raise UpstreamError("the provider's stream went on after it ended")
            return []
        events: list[JSON] = []
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._tokens = Tokens.from_openai(usage)
        if not self._started:
            self._started = True
            events.append({"type": "message_start", "message": {
                "id": chunk.get("id") or f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant",
                "model": self.model, "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": (self._tokens or Tokens()).anthropic()}})
            events.append({"type": "ping"})  # as Anthropic's own streams do, right after message_start
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                raise UpstreamError("the provider's stream holds more than one choice")
            events.extend(self._choice(choice))
        if self._finish is not None and isinstance(usage, dict):
            events.extend(self._end())
        return events

    def _choice(self, choice: JSON) -> list[JSON]:
        delta = choice.get("delta") or {}
        events: list[JSON] = []
        has_content = delta.get("content") or delta.get("refusal") or delta.get("tool_calls")
        if has_content and self._finish is not None:
            raise UpstreamError("the provider's stream sent content after its finish reason")
        if delta.get("function_call"):
            raise UpstreamError("the provider's stream holds a legacy function call, which Anthropic cannot express")
        for text in (delta.get("content"), delta.get("refusal")):
            if isinstance(text, str) and text:
                events.extend(self._text(text))
        self._refused = self._refused or bool(delta.get("refusal"))
        for position, call in enumerate(delta.get("tool_calls") or ()):
            events.extend(self._tool_call(call, position))
        if choice.get("finish_reason"):
            events.extend(self._close())
            self._finish = choice["finish_reason"]
        return events

    def _start(self, block: JSON) -> list[JSON]:
        events = self._close()
        events.append({"type": "content_block_start", "index": self._blocks, "content_block": block})
        self._blocks += 1
        return events

    def _text(self, text: str) -> list[JSON]:
        events = [] if self._text_open else self._start({"type": "text", "text": ""})
        self._text_open = True
        events.append({"type": "content_block_delta", "index": self._blocks - 1,
                       "delta": {"type": "text_delta", "text": text}})
        return events

    def _tool_call(self, call: JSON, position: int) -> list[JSON]:
        index = call.get("index", position)
        function = call.get("function") or {}
        block = self._tools.get(index)
        events: list[JSON] = []
        if block is None:
            if not call.get("id") or not function.get("name"):
                raise UpstreamError("the provider's stream started a tool call without its id and name")
            events = self._start({"type": "tool_use", "id": call["id"], "name": function["name"], "input": {}})
            block = self._tools[index] = self._tool = _ToolBlock(self._blocks - 1, call["id"], function["name"])
        elif call.get("id") not in (None, "", block.id) or function.get("name") not in (None, "", block.name):
            raise UpstreamError("the provider's stream renamed a tool call mid-way")
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            if block is not self._tool:
                # Anthropic streams one block at a time; a closed block cannot take more input.
                raise UpstreamError("the provider's stream interleaved the arguments of two tool calls")
            block.arguments.append(arguments)
            events.append({"type": "content_block_delta", "index": block.index,
                           "delta": {"type": "input_json_delta", "partial_json": arguments}})
        return events

    def _close(self) -> list[JSON]:
        if self._tool is not None:
            tool_input("".join(self._tool.arguments), self._tool.name)
        elif not self._text_open:
            return []
        self._tool, self._text_open = None, False
        return [{"type": "content_block_stop", "index": self._blocks - 1}]

    def _end(self) -> list[JSON]:
        self._done = True
        tokens = self._tokens or Tokens()
        stop = stop_reason(self._finish, tool_calls=bool(self._tools), refused=self._refused)
        delta_usage = {key: value for key, value in tokens.anthropic().items() if key != "output_tokens_details"}
        return [*self._close(),
                {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": delta_usage},
                {"type": "message_stop"}]

    def finish(self) -> list[dict[str, Any]]:
        if self._done:
            return []
        if self._finish is None:
            raise UpstreamError("the provider's stream ended before its finish reason")
        return self._end()
