"""Whole (non-streamed) answers, Anthropic ``message`` <-> OpenAI
``chat.completion``, and the stop reasons and tool arguments that streams
map the same way.

Text <-> text; ``tool_use`` <-> ``tool_calls``; Anthropic ``thinking`` ->
``reasoning_content`` (``redacted_thinking`` and signatures are encrypted
and carry nothing readable); OpenAI ``reasoning_content`` is not sent to
Anthropic clients, who never asked for thinking (the gateway refuses
``thinking``). Stop reasons: ``end_turn`` / ``stop_sequence`` /
``pause_turn`` -> ``stop``, ``max_tokens`` /
``model_context_window_exceeded`` -> ``length``, ``tool_use`` ->
``tool_calls``, ``refusal`` -> ``content_filter``, and back ``stop`` ->
``end_turn`` (``tool_use`` when tool calls came), ``length`` ->
``max_tokens``, ``tool_calls`` / ``function_call`` -> ``tool_use``,
``content_filter`` or an OpenAI refusal -> ``refusal``. An answer that
cannot be expressed (a server-tool block, tool arguments that are not a
JSON object, a second choice) raises ``UpstreamError`` rather than reach the
client smaller.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from schema.errors import UpstreamError
from schema.translate.anthropic.checks import JSON, json_text
from schema.translate.anthropic.usage import Tokens

FINISH_FROM_ANTHROPIC = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_STOP_FROM_OPENAI = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def response_to_openai(message: dict[str, Any], *, model: str) -> dict[str, Any]:
    """An Anthropic ``message`` as a ``chat.completion``."""
    text: list[str] = []
    thinking: list[str] = []
    tool_calls: list[JSON] = []
    for block in message.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(block.get("text") or "")
        elif kind == "thinking":
            thinking.append(block.get("thinking") or "")
        elif kind == "redacted_thinking":
            continue  # encrypted: nothing a client could read
        elif kind == "tool_use":
            arguments = json_text(block.get("input") or {})
            tool_calls.append({"id": block.get("id"), "type": "function",
                               "function": {"name": block.get("name"), "arguments": arguments}})
        else:
            raise UpstreamError(f"the provider's answer holds a {kind!r} block, which chat completions cannot express")
    reply: JSON = {"role": "assistant", "content": "".join(text) if text or not tool_calls else None, "refusal": None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    if thinking:
        reply["reasoning_content"] = "".join(thinking)
    tokens = Tokens()
    tokens.read_anthropic(message.get("usage"))
    return {
        "id": message.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": reply, "logprobs": None,
                     "finish_reason": FINISH_FROM_ANTHROPIC.get(message.get("stop_reason") or "end_turn", "stop")}],
        "usage": tokens.openai(),
    }


def stop_reason(finish_reason: object, *, tool_calls: bool, refused: bool) -> str:
    if refused:
        return "refusal"
    reason = _STOP_FROM_OPENAI.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"
    # Some OpenAI-compatible servers say "stop" after tool calls; Anthropic clients run tools on "tool_use".
    return "tool_use" if tool_calls and reason == "end_turn" else reason


def tool_input(arguments: object, name: object) -> JSON:
    text = arguments if isinstance(arguments, str) else ""
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamError(f"the model's arguments for tool {name!r} are not a JSON object")
    return value


def response_from_openai(completion: dict[str, Any], *, model: str) -> dict[str, Any]:
    """A ``chat.completion`` as an Anthropic ``message``."""
    choices = completion.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        raise UpstreamError("the provider's answer does not hold exactly one choice")
    choice = choices[0]
    reply = found if isinstance(found := choice.get("message"), dict) else {}
    content: list[JSON] = []
    for text in (reply.get("content"), reply.get("refusal")):
        if isinstance(text, str) and text:
            content.append({"type": "text", "text": text})
    calls = reply.get("tool_calls") or []
    for call in calls:
        function = call.get("function") or {}
        name = function.get("name")
        content.append({"type": "tool_use", "id": call.get("id") or f"toolu_{uuid.uuid4().hex}", "name": name,
                        "input": tool_input(function.get("arguments"), name)})
    refused = bool(reply.get("refusal"))
    return {
        "id": completion.get("id") or f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason"), tool_calls=bool(calls), refused=refused),
        "stop_sequence": None,
        "usage": Tokens.from_openai(completion.get("usage")).anthropic(),
    }
