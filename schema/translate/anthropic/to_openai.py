"""Requests, Anthropic Messages -> OpenAI chat completions: the inverse of
``to_anthropic`` (``max_tokens`` -> ``max_tokens``, which every
OpenAI-compatible server reads; ``metadata.user_id`` -> ``user``;
``tool_result`` blocks -> ``tool`` messages placed before the rest of their
turn).

Refused (400): ``top_k``, ``thinking`` (other than ``disabled``),
``output_config``, ``container``, ``mcp_servers``, ``context_management``,
``inference_geo``, ``user_profile_id``, ``workspace_id``, server tools and
tool fields with no counterpart (``input_examples``, ``defer_loading``,
``allowed_callers``), ``document`` / ``search_result`` and other blocks,
``file`` image sources, citations, images inside a ``tool_result`` and
``is_error: true`` (an OpenAI tool message holds text only), unknown fields.
Dropped hints: ``cache_control`` (anywhere), ``service_tier``, ``speed``,
``diagnostics``, a tool's ``eager_input_streaming``, a ``tool_use``'s
``caller`` when it is ``direct``, and the ``thinking`` /
``redacted_thinking`` blocks of earlier assistant turns (the model's own
reasoning, which OpenAI's API never takes back).

Unknown fields are refused at every level, not only the top; a ``null``
field says nothing and passes (SDKs send their models' unset fields so).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schema.translate.anthropic.checks import (
    JSON,
    absent,
    as_array,
    as_number,
    as_object,
    as_text,
    check_fields,
    json_text,
    refuse,
)

_ANTHROPIC_HANDLED = frozenset({
    "messages", "system", "max_tokens", "temperature", "top_p", "stop_sequences", "tools", "tool_choice", "metadata",
})
_ANTHROPIC_HINTS = frozenset({"cache_control", "service_tier", "speed", "diagnostics"})
_TO_OPENAI = "an OpenAI-compatible model"
_ANTHROPIC_REFUSED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "top_k": (absent, "OpenAI-compatible models take no top_k"),
    "thinking": (lambda v: v is None or v == {"type": "disabled"}, "extended thinking cannot be translated for "
                 "an OpenAI-compatible model"),
    "output_config": (lambda v: not v, "cannot be translated for an OpenAI-compatible model"),
    "container": (absent, "containers cannot be translated for an OpenAI-compatible model"),
    "mcp_servers": (lambda v: not v, "MCP servers cannot be translated for an OpenAI-compatible model"),
    "context_management": (absent, "cannot be translated for an OpenAI-compatible model"),
    "inference_geo": (absent, "an inference region cannot be guaranteed by an OpenAI-compatible model"),
}
_TOOL_FIELDS = frozenset({"name", "description", "input_schema", "strict", "type"})
_TEXT_BLOCK_FIELDS = frozenset({"type", "text", "citations", "cache_control"})
_BLOCK_FIELDS = {
    "text": _TEXT_BLOCK_FIELDS,
    "image": frozenset({"type", "source", "cache_control"}),
    "tool_result": frozenset({"type", "tool_use_id", "content", "is_error", "cache_control"}),
    "tool_use": frozenset({"type", "id", "name", "input", "caller", "cache_control"}),
}
_SOURCE_FIELDS = {"base64": frozenset({"type", "media_type", "data"}), "url": frozenset({"type", "url"})}
_TOOL_HINTS = frozenset({"cache_control", "eager_input_streaming"})


def request_to_openai(payload: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request (no ``model``/``stream``) as an OpenAI chat request."""
    check_fields(payload, _ANTHROPIC_HANDLED, _ANTHROPIC_HINTS, _ANTHROPIC_REFUSED, _TO_OPENAI)
    messages: list[JSON] = []
    system = payload.get("system")
    if system is not None:
        parts = _text_parts(system, "system")
        if parts:
            messages.append({"role": "system", "content": _openai_content(parts)})
    for position, message in enumerate(as_array(payload.get("messages"), "messages")):
        where = f"messages.{position}"
        messages.extend(_messages_to_openai(as_object(message, where, frozenset({"role", "content"})), where))
    request: JSON = {"messages": messages}
    if payload.get("max_tokens") is not None:
        max_tokens = payload["max_tokens"]
        if type(max_tokens) is not int or max_tokens < 1:
            raise refuse("max_tokens", "must be a positive integer")
        request["max_tokens"] = max_tokens
    if payload.get("temperature") is not None:
        request["temperature"] = as_number(payload["temperature"], "temperature", low=0, high=1,
                                         why="must be a number from 0 to 1")
    if payload.get("top_p") is not None:
        request["top_p"] = as_number(payload["top_p"], "top_p", low=0, high=1, why="must be a number from 0 to 1")
    stop = payload.get("stop_sequences")
    if stop:
        if not isinstance(stop, list) or not all(isinstance(item, str) for item in stop):
            raise refuse("stop_sequences", "must be an array of strings")
        request["stop"] = stop
    request.update(_tools_to_openai(payload))
    metadata = payload.get("metadata")
    if metadata is not None:
        metadata = as_object(metadata, "metadata")
        for name in metadata.keys() - {"user_id"}:
            raise refuse(f"metadata.{name}", "only metadata.user_id can be translated")
        if metadata.get("user_id") is not None:
            request["user"] = as_text(metadata["user_id"], "metadata.user_id")
    return request


def _openai_content(parts: list[JSON]) -> str | list[JSON]:
    """One text part is sent as a string, which every OpenAI-compatible server reads."""
    if len(parts) == 1 and parts[0]["type"] == "text":
        text: str = parts[0]["text"]
        return text
    return parts


def _text_parts(content: object, where: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    parts = []
    for position, block in enumerate(as_array(content, where)):
        block = as_object(block, f"{where}.{position}")
        if block.get("type") != "text":
            raise refuse(f"{where}.{position}.type", "only text blocks can be translated here")
        as_object(block, f"{where}.{position}", _TEXT_BLOCK_FIELDS)
        parts.append(_text_part(block, f"{where}.{position}"))
    return parts


def _text_part(block: JSON, where: str) -> JSON:
    if block.get("citations"):
        raise refuse(f"{where}.citations", "citations cannot be translated for an OpenAI-compatible model")
    return {"type": "text", "text": as_text(block.get("text"), f"{where}.text")}


def _messages_to_openai(message: JSON, where: str) -> list[JSON]:
    role, content = message.get("role"), message.get("content")
    if role not in ("user", "assistant"):
        raise refuse(f"{where}.role", "must be user or assistant")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    tool_messages: list[JSON] = []
    parts: list[JSON] = []
    tool_calls: list[JSON] = []
    for position, block in enumerate(as_array(content, f"{where}.content")):
        at = f"{where}.content.{position}"
        block = as_object(block, at)
        kind = block.get("type")
        if kind in _BLOCK_FIELDS:
            as_object(block, at, _BLOCK_FIELDS[kind])
        if kind == "tool_use" and block.get("caller") not in (None, {"type": "direct"}):
            raise refuse(f"{at}.caller", "only tool calls the model made itself can be translated")
        if kind == "text":
            parts.append(_text_part(block, at))
        elif kind == "image" and role == "user":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block.get("source"), f"{at}.source")}})
        elif kind == "tool_result" and role == "user":
            tool_messages.append(_tool_message(block, at))
        elif kind == "tool_use" and role == "assistant":
            tool_calls.append({
                "id": as_text(block.get("id"), f"{at}.id"),
                "type": "function",
                "function": {"name": as_text(block.get("name"), f"{at}.name"),
                             "arguments": json_text(as_object(block.get("input"), f"{at}.input"))},
            })
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            continue  # the model's earlier reasoning: OpenAI's API takes none back
        else:
            raise refuse(f"{at}.type", f"a {role} `{kind}` block cannot be translated for an OpenAI-compatible model")
    # OpenAI wants tool results right after the assistant's calls; Anthropic puts them first in the turn too.
    messages = tool_messages
    if role == "assistant":
        assistant: JSON = {"role": "assistant", "content": _openai_content(parts) if parts else None}
        if tool_calls:
            assistant["tool_calls"] = tool_calls
        elif not parts:
            assistant["content"] = ""
        messages.append(assistant)
    elif parts or not tool_messages:
        messages.append({"role": "user", "content": _openai_content(parts) if parts else ""})
    return messages


def _image_url(source: object, where: str) -> str:
    source = as_object(source, where)
    kind = source.get("type")
    if kind in _SOURCE_FIELDS:
        as_object(source, where, _SOURCE_FIELDS[kind])
    if kind == "base64":
        mime = as_text(source.get("media_type"), f"{where}.media_type")
        return f"data:{mime};base64,{as_text(source.get('data'), f'{where}.data')}"
    if kind == "url":
        return as_text(source.get("url"), f"{where}.url")
    raise refuse(f"{where}.type", "only base64 and url image sources can be translated")


def _tool_message(block: JSON, where: str) -> JSON:
    if block.get("is_error"):
        raise refuse(f"{where}.is_error", "an OpenAI-compatible model cannot be told a tool failed")
    content = block.get("content")
    message: JSON = {"role": "tool", "tool_call_id": as_text(block.get("tool_use_id"), f"{where}.tool_use_id")}
    if content is None or isinstance(content, str):
        message["content"] = content or ""
        return message
    parts = []
    for position, item in enumerate(as_array(content, f"{where}.content")):
        item = as_object(item, f"{where}.content.{position}")
        if item.get("type") != "text":
            raise refuse(f"{where}.content.{position}.type",
                          "an OpenAI tool message holds text only; this tool result cannot be translated")
        as_object(item, f"{where}.content.{position}", _TEXT_BLOCK_FIELDS)
        parts.append(_text_part(item, f"{where}.content.{position}"))
    message["content"] = _openai_content(parts) if parts else ""
    return message


def _tools_to_openai(payload: JSON) -> JSON:
    tools = []
    for position, tool in enumerate(as_array(payload.get("tools") or [], "tools")):
        at = f"tools.{position}"
        tool = as_object(tool, at)
        if tool.get("type") not in (None, "custom"):
            raise refuse(f"{at}.type", f"the server tool {tool.get('type')!r} cannot be translated for an "
                          "OpenAI-compatible model")
        for name in tool.keys() - _TOOL_FIELDS - _TOOL_HINTS:
            raise refuse(f"{at}.{name}", "cannot be translated for an OpenAI-compatible model")
        function: JSON = {"name": as_text(tool.get("name"), f"{at}.name"),
                          "parameters": as_object(tool.get("input_schema"), f"{at}.input_schema")}
        if tool.get("description") is not None:
            function["description"] = as_text(tool["description"], f"{at}.description")
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        tools.append({"type": "function", "function": function})
    choice = payload.get("tool_choice")
    if not tools:
        if choice is not None and as_object(choice, "tool_choice").get("type") not in ("auto", "none"):
            raise refuse("tool_choice", "a tool choice needs `tools`")
        return {}
    request: JSON = {"tools": tools}
    if choice is None:
        return request
    choice = as_object(choice, "tool_choice", frozenset({"type", "name", "disable_parallel_tool_use"}))
    kind = choice.get("type")
    if kind == "auto":
        request["tool_choice"] = "auto"
    elif kind == "any":
        request["tool_choice"] = "required"
    elif kind == "none":
        request["tool_choice"] = "none"
    elif kind == "tool":
        name = as_text(choice.get("name"), "tool_choice.name")
        request["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise refuse("tool_choice.type", "must be auto, any, tool or none")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        request["parallel_tool_calls"] = False
    return request
