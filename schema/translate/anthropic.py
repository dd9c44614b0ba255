"""OpenAI chat completions <-> Anthropic Messages: requests, whole answers
and streams, and usage in Anthropic's shapes.

Requests map field by field; whatever has no counterpart is refused with
``Untranslatable`` (400, ``param`` naming the field), except the pure hints
below, which change no answer and are dropped.

OpenAI request -> Anthropic:

============================================  ==========================================================
``messages`` system / developer               ``system`` (every one, in order; Anthropic has one system
                                              prompt, so later ones are hoisted, as Anthropic's own
                                              OpenAI compatibility does); a lone string stays a string
``messages`` user / assistant                 ``messages``; consecutive same-role turns merged into one
text part, ``image_url``                      ``text`` block; ``image`` with a ``base64`` source (``data:``
                                              URL of JPEG/PNG/GIF/WebP) or a ``url`` source (http/https)
assistant ``tool_calls``                      ``tool_use`` blocks (``arguments`` must be a JSON object)
``tool`` messages                             ``tool_result`` blocks, grouped into one user turn
``max_completion_tokens`` / ``max_tokens``    ``max_tokens`` (the first one set, as admission reads them;
                                              ``DEFAULT_MAX_TOKENS`` when neither is)
``temperature`` / ``top_p``                   same (``temperature`` above 1 is refused: Anthropic takes 0-1)
``stop`` (string or list)                     ``stop_sequences`` (whitespace-only sequences are refused:
                                              Anthropic rejects them)
``tools`` (function), ``tool_choice``         ``tools`` (``parameters`` -> ``input_schema``); ``auto`` /
                                              ``required`` -> ``any`` / ``none`` / a named function ->
                                              ``tool``
``parallel_tool_calls: false``                ``tool_choice.disable_parallel_tool_use: true``
``safety_identifier`` or ``user``             ``metadata.user_id``
============================================  ==========================================================

Refused (400): ``n`` > 1, ``logprobs``, ``top_logprobs``, ``logit_bias``,
non-zero ``presence_penalty`` / ``frequency_penalty``, ``response_format``
other than ``text``, ``audio`` and audio ``modalities``, ``functions`` /
``function_call`` and ``function`` messages (the deprecated API: use
``tools``), ``reasoning_effort``, ``verbosity``, ``web_search_options``,
``moderation``, message ``name``, assistant ``refusal`` / ``audio``, custom
tools and ``allowed_tools`` choices, ``input_audio`` and ``file`` parts,
unknown fields. Dropped hints: ``store``, ``metadata`` (OpenAI's stored
completion tags), ``stream_options`` (the gateway applies it itself),
``seed`` (best effort only, by OpenAI's own terms), ``service_tier``,
``prediction``, ``prompt_cache_key`` / ``_retention`` / ``_options``, part
``prompt_cache_breakpoint``, image ``detail``, and the ``annotations`` and
``reasoning_content`` of an answer echoed back as an assistant message.

Unknown fields are refused at every level, not only the top; a ``null``
field says nothing and passes (SDKs send their models' unset fields so).

Anthropic request -> OpenAI is the inverse (``max_tokens`` -> ``max_tokens``,
which every OpenAI-compatible server reads; ``metadata.user_id`` -> ``user``;
``tool_result`` blocks -> ``tool`` messages placed before the rest of their
turn). Refused (400): ``top_k``, ``thinking`` (other than ``disabled``),
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

Answers and streams: text <-> text; ``tool_use`` <-> ``tool_calls``;
Anthropic ``thinking`` -> ``reasoning_content`` (``redacted_thinking`` and
signatures are encrypted and carry nothing readable); OpenAI
``reasoning_content`` is not sent to Anthropic clients, who never asked for
thinking (the gateway refuses ``thinking``). Stop reasons: ``end_turn`` /
``stop_sequence`` / ``pause_turn`` -> ``stop``, ``max_tokens`` /
``model_context_window_exceeded`` -> ``length``, ``tool_use`` ->
``tool_calls``, ``refusal`` -> ``content_filter``, and back ``stop`` ->
``end_turn`` (``tool_use`` when tool calls came), ``length`` ->
``max_tokens``, ``tool_calls`` / ``function_call`` -> ``tool_use``,
``content_filter`` or an OpenAI refusal -> ``refusal``. Usage:
``prompt_tokens`` = ``input_tokens`` + ``cache_creation_input_tokens`` +
``cache_read_input_tokens`` (the cache parts kept as ``prompt_tokens_details``
``cache_write_tokens`` / ``cached_tokens``), ``completion_tokens`` =
``output_tokens``. An answer that cannot be expressed (a server-tool block,
tool arguments that are not a JSON object, a second choice) raises
``UpstreamError`` rather than reach the client smaller.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schema.errors import UpstreamError
from schema.jobs import Usage
from schema.translate import DEFAULT_MAX_TOKENS, Untranslatable

JSON = dict[str, Any]

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)

_FINISH_FROM_ANTHROPIC = {
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


def _refuse(param: str, why: str) -> Untranslatable:
    return Untranslatable(f"`{param}`: {why}", param=param)


def _object(value: object, param: str, fields: frozenset[str] | None = None) -> JSON:
    """``value`` as an object; with ``fields``, one holding no other field
    (a ``null`` one says nothing: SDKs send their models' unset fields so)."""
    if not isinstance(value, dict):
        raise _refuse(param, "must be an object")
    for name in sorted(value.keys() - fields if fields is not None else ()):
        if value[name] is not None:
            raise _refuse(f"{param}.{name}", "this field cannot be translated")
    return value


def _array(value: object, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise _refuse(param, "must be an array")
    return value


def _text(value: object, param: str) -> str:
    if not isinstance(value, str):
        raise _refuse(param, "must be a string")
    return value


def _number(value: object, param: str, *, low: float, high: float, why: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _refuse(param, why)
    return value


def _absent(value: object) -> bool:
    return value is None


def _check_fields(payload: JSON, handled: frozenset[str], hints: frozenset[str],
                  refused: dict[str, tuple[Callable[[Any], bool], str]], target: str) -> None:
    """Every field is handled, a listed hint, or refused; none is lost unseen."""
    for name, value in payload.items():
        if name in handled or name in hints:
            continue
        if name in refused:
            harmless, why = refused[name]
            if not harmless(value):
                raise _refuse(name, why)
            continue
        raise _refuse(name, f"this field cannot be translated for {target}")


# --- requests: OpenAI -> Anthropic -------------------------------------------------------------

_OPENAI_HANDLED = frozenset({
    "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "tools", "tool_choice",
    "parallel_tool_calls", "user", "safety_identifier",
})
_OPENAI_HINTS = frozenset({
    "store", "metadata", "stream_options", "seed", "service_tier", "prediction", "prompt_cache_key",
    "prompt_cache_retention", "prompt_cache_options",
})
_TO_ANTHROPIC = "an Anthropic model"
# What each message and part may hold. Besides the fields translated: `annotations` (an answer's URL
# citations) and `reasoning_content` (the model's reasoning) come back in echoed answers and are
# dropped like Anthropic's earlier thinking; `detail` and `prompt_cache_breakpoint` are hints.
_OPENAI_MESSAGE_FIELDS = {
    "system": frozenset({"role", "content", "name"}),
    "developer": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset({"role", "content", "name", "tool_calls", "refusal", "audio", "function_call",
                            "annotations", "reasoning_content"}),
    "tool": frozenset({"role", "content", "tool_call_id"}),
}
_OPENAI_TEXT_FIELDS = frozenset({"type", "text", "prompt_cache_breakpoint"})
_OPENAI_IMAGE_FIELDS = frozenset({"type", "image_url", "prompt_cache_breakpoint"})
_OPENAI_REFUSED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (lambda v: v is None or (type(v) is int and v == 1), "Anthropic models return one choice per request"),
    "logprobs": (lambda v: v is None or v is False, "Anthropic models return no log probabilities"),
    "top_logprobs": (lambda v: v is None or (type(v) is int and v == 0), "Anthropic models return no log probabilities"),
    "logit_bias": (lambda v: v is None or v == {}, "Anthropic models take no token biases"),
    "presence_penalty": (lambda v: v is None or v == 0, "Anthropic models take no presence penalty"),
    "frequency_penalty": (lambda v: v is None or v == 0, "Anthropic models take no frequency penalty"),
    "response_format": (lambda v: v is None or v == {"type": "text"},
                        "Anthropic models take no response format other than text here"),
    "audio": (_absent, "Anthropic models produce no audio"),
    "modalities": (lambda v: v is None or v == ["text"], "Anthropic models produce text only"),
    "functions": (lambda v: v is None or v == [], "the deprecated `functions` API cannot be translated; use `tools`"),
    "function_call": (_absent, "the deprecated `functions` API cannot be translated; use `tool_choice`"),
    "reasoning_effort": (_absent, "cannot be translated for an Anthropic model"),
    "verbosity": (_absent, "cannot be translated for an Anthropic model"),
    "web_search_options": (_absent, "Anthropic models take no web search options here"),
    "moderation": (_absent, "cannot be translated for an Anthropic model"),
}


def request_from_openai(payload: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request (no ``model``/``stream``) as an Anthropic Messages request."""
    _check_fields(payload, _OPENAI_HANDLED, _OPENAI_HINTS, _OPENAI_REFUSED, _TO_ANTHROPIC)
    system, messages = _messages_from_openai(_array(payload.get("messages"), "messages"))
    request: JSON = {"messages": messages}
    if system is not None:
        request["system"] = system
    request["max_tokens"] = _max_tokens(payload)
    if payload.get("temperature") is not None:
        temperature = payload["temperature"]
        _number(temperature, "temperature", low=0, high=2, why="must be a number from 0 to 2")
        request["temperature"] = _number(temperature, "temperature", low=0, high=1,
                                         why="Anthropic models take a temperature from 0 to 1")
    if payload.get("top_p") is not None:
        request["top_p"] = _number(payload["top_p"], "top_p", low=0, high=1, why="must be a number from 0 to 1")
    stop = _stop_sequences(payload.get("stop"))
    if stop:
        request["stop_sequences"] = stop
    request.update(_tools_from_openai(payload))
    for name in ("safety_identifier", "user"):  # the newer name first: OpenAI moved `user` there
        if payload.get(name) is not None:
            request["metadata"] = {"user_id": _text(payload[name], name)}
            break
    return request


def _max_tokens(payload: JSON) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = payload.get(name)
        if value is None:
            continue
        if type(value) is not int or value < 1:
            raise _refuse(name, "must be a positive integer")
        return value
    return DEFAULT_MAX_TOKENS


def _stop_sequences(stop: object) -> list[str]:
    sequences = [stop] if isinstance(stop, str) else [] if stop is None else stop
    if not isinstance(sequences, list) or not all(isinstance(item, str) for item in sequences):
        raise _refuse("stop", "must be a string or an array of strings")
    for sequence in sequences:
        if not sequence.strip():
            raise _refuse("stop", f"Anthropic models take no stop sequence made only of whitespace ({sequence!r})")
    return sequences


def _messages_from_openai(messages: list[Any]) -> tuple[str | list[JSON] | None, list[JSON]]:
    system: list[JSON] = []
    system_strings = 0
    turns: list[tuple[str, list[JSON]]] = []

    def add(role: str, blocks: list[JSON]) -> None:
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))

    for position, message in enumerate(messages):
        where = f"messages.{position}"
        message = _object(message, where)
        role = message.get("role")
        _object(message, where, _OPENAI_MESSAGE_FIELDS.get(role))
        if role == "function":
            raise _refuse(f"{where}.role", "the deprecated `function` role cannot be translated; use `tool`")
        if message.get("name") is not None:
            raise _refuse(f"{where}.name", "Anthropic models take no participant names")
        if role in ("system", "developer"):
            content = message.get("content")
            system_strings += isinstance(content, str)
            system.extend(_text_blocks(content, f"{where}.content"))
        elif role == "user":
            add("user", _user_blocks(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            add("assistant", _assistant_blocks(message, where))
        elif role == "tool":
            add("user", [_tool_result(message, where)])
        else:
            raise _refuse(f"{where}.role", "must be system, developer, user, assistant or tool")
    anthropic_system: str | list[JSON] | None = None
    if system_strings == 1 and len(system) == 1:
        anthropic_system = system[0]["text"]
    elif system:
        anthropic_system = system
    return anthropic_system, [{"role": role, "content": _compact(blocks)} for role, blocks in turns]


def _compact(blocks: list[JSON]) -> str | list[JSON]:
    """One plain text block is the same message as a string, and reads simpler."""
    if len(blocks) == 1 and blocks[0].keys() == {"type", "text"} and blocks[0]["type"] == "text":
        return blocks[0]["text"]
    return blocks


def _text_blocks(content: object, where: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for position, part in enumerate(_array(content, where)):
        part = _object(part, f"{where}.{position}")
        if part.get("type") != "text":
            raise _refuse(f"{where}.{position}.type", "only text parts can be translated here")
        _object(part, f"{where}.{position}", _OPENAI_TEXT_FIELDS)
        text = _text(part.get("text"), f"{where}.{position}.text")
        if text:  # Anthropic refuses empty text blocks; an empty part says nothing
            blocks.append({"type": "text", "text": text})
    return blocks


def _user_blocks(content: object, where: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks = []
    for position, part in enumerate(_array(content, where)):
        at = f"{where}.{position}"
        part = _object(part, at)
        kind = part.get("type")
        if kind in ("text", "image_url"):
            _object(part, at, _OPENAI_TEXT_FIELDS if kind == "text" else _OPENAI_IMAGE_FIELDS)
        if kind == "text":
            text = _text(part.get("text"), f"{at}.text")
            if text:  # Anthropic refuses empty text blocks; an empty part says nothing
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            image = _object(part.get("image_url"), f"{at}.image_url", frozenset({"url", "detail"}))
            blocks.append({"type": "image", "source": _image_source(image.get("url"), f"{at}.image_url.url")})
        elif kind in ("input_audio", "file"):
            raise _refuse(f"{at}.type", f"Anthropic models take no `{kind}` parts here")
        else:
            raise _refuse(f"{at}.type", "must be a text or image_url part")
    return blocks


def _image_source(url: object, where: str) -> JSON:
    url = _text(url, where)
    if url.startswith("data:"):
        match = _DATA_URL.fullmatch(url)
        if match is None:
            raise _refuse(where, "a data URL must look like data:<image type>;base64,<data>")
        mime = match["mime"].lower().replace("image/jpg", "image/jpeg")
        if mime not in IMAGE_TYPES:
            raise _refuse(where, f"Anthropic models take JPEG, PNG, GIF or WebP images, not {mime}")
        return {"type": "base64", "media_type": mime, "data": match["data"]}
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}
    raise _refuse(where, "an image must be an http(s) URL or a base64 data URL")


def _assistant_blocks(message: JSON, where: str) -> list[JSON]:
    for name in ("refusal", "audio", "function_call"):
        if message.get(name) is not None:
            raise _refuse(f"{where}.{name}", "cannot be translated for an Anthropic model")
    content = message.get("content")
    blocks = [] if content is None else _text_blocks(content, f"{where}.content")
    for position, call in enumerate(_array(message.get("tool_calls") or [], f"{where}.tool_calls")):
        at = f"{where}.tool_calls.{position}"
        call = _object(call, at, frozenset({"id", "type", "function", "index"}))
        if call.get("type", "function") != "function":
            raise _refuse(f"{at}.type", "only function tool calls can be translated")
        function = _object(call.get("function"), f"{at}.function", frozenset({"name", "arguments"}))
        blocks.append({
            "type": "tool_use",
            "id": _text(call.get("id"), f"{at}.id"),
            "name": _text(function.get("name"), f"{at}.function.name"),
            "input": _arguments(function.get("arguments"), f"{at}.function.arguments"),
        })
    return blocks


def _arguments(arguments: object, where: str) -> JSON:
    text = _text(arguments, where)
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise _refuse(where, "tool call arguments must be a JSON object")
    return value


def _tool_result(message: JSON, where: str) -> JSON:
    content = message.get("content")
    result: JSON = {"type": "tool_result", "tool_use_id": _text(message.get("tool_call_id"), f"{where}.tool_call_id")}
    if isinstance(content, str):
        result["content"] = content
    elif content is not None:
        result["content"] = _text_blocks(content, f"{where}.content")
    return result


def _tools_from_openai(payload: JSON) -> JSON:
    tools = []
    for position, tool in enumerate(_array(payload.get("tools") or [], "tools")):
        at = f"tools.{position}"
        tool = _object(tool, at)
        if tool.get("type") != "function":
            raise _refuse(f"{at}.type", "only function tools can be translated for an Anthropic model")
        _object(tool, at, frozenset({"type", "function"}))
        function = _object(tool.get("function"), f"{at}.function",
                           frozenset({"name", "description", "parameters", "strict"}))
        schema = _object(function.get("parameters") or {"type": "object", "properties": {}}, f"{at}.function.parameters")
        if schema.get("type", "object") != "object":
            raise _refuse(f"{at}.function.parameters", "Anthropic tools take an object schema")
        converted: JSON = {"name": _text(function.get("name"), f"{at}.function.name"),
                           "input_schema": {"type": "object", **schema}}
        if function.get("description") is not None:
            converted["description"] = _text(function["description"], f"{at}.function.description")
        if function.get("strict") is not None:
            converted["strict"] = function["strict"]
        tools.append(converted)
    choice = payload.get("tool_choice")
    parallel = payload.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise _refuse("parallel_tool_calls", "must be a boolean")
    if not tools:
        if choice not in (None, "none", "auto"):
            raise _refuse("tool_choice", "a tool choice needs `tools`")
        return {}
    if choice is None or choice == "auto":
        anthropic_choice: JSON = {"type": "auto"}
    elif choice == "required":
        anthropic_choice = {"type": "any"}
    elif choice == "none":
        anthropic_choice = {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        _object(choice, "tool_choice", frozenset({"type", "function"}))
        name = _object(choice.get("function"), "tool_choice.function", frozenset({"name"})).get("name")
        anthropic_choice = {"type": "tool", "name": _text(name, "tool_choice.function.name")}
    else:
        raise _refuse("tool_choice", "must be auto, required, none or a named function for an Anthropic model")
    if parallel is False and anthropic_choice["type"] != "none":
        anthropic_choice["disable_parallel_tool_use"] = True
    if choice is None and parallel is not False:
        return {"tools": tools}  # Anthropic's default is auto already
    return {"tools": tools, "tool_choice": anthropic_choice}


# --- requests: Anthropic -> OpenAI -------------------------------------------------------------

_ANTHROPIC_HANDLED = frozenset({
    "messages", "system", "max_tokens", "temperature", "top_p", "stop_sequences", "tools", "tool_choice", "metadata",
})
_ANTHROPIC_HINTS = frozenset({"cache_control", "service_tier", "speed", "diagnostics"})
_TO_OPENAI = "an OpenAI-compatible model"
_ANTHROPIC_REFUSED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "top_k": (_absent, "OpenAI-compatible models take no top_k"),
    "thinking": (lambda v: v is None or v == {"type": "disabled"}, "extended thinking cannot be translated for "
                 "an OpenAI-compatible model"),
    "output_config": (lambda v: not v, "cannot be translated for an OpenAI-compatible model"),
    "container": (_absent, "containers cannot be translated for an OpenAI-compatible model"),
    "mcp_servers": (lambda v: not v, "MCP servers cannot be translated for an OpenAI-compatible model"),
    "context_management": (_absent, "cannot be translated for an OpenAI-compatible model"),
    "inference_geo": (_absent, "an inference region cannot be guaranteed by an OpenAI-compatible model"),
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
    _check_fields(payload, _ANTHROPIC_HANDLED, _ANTHROPIC_HINTS, _ANTHROPIC_REFUSED, _TO_OPENAI)
    messages: list[JSON] = []
    system = payload.get("system")
    if system is not None:
        parts = _text_parts(system, "system")
        if parts:
            messages.append({"role": "system", "content": _openai_content(parts)})
    for position, message in enumerate(_array(payload.get("messages"), "messages")):
        where = f"messages.{position}"
        messages.extend(_messages_to_openai(_object(message, where, frozenset({"role", "content"})), where))
    request: JSON = {"messages": messages}
    if payload.get("max_tokens") is not None:
        max_tokens = payload["max_tokens"]
        if type(max_tokens) is not int or max_tokens < 1:
            raise _refuse("max_tokens", "must be a positive integer")
        request["max_tokens"] = max_tokens
    if payload.get("temperature") is not None:
        request["temperature"] = _number(payload["temperature"], "temperature", low=0, high=1,
                                         why="must be a number from 0 to 1")
    if payload.get("top_p") is not None:
        request["top_p"] = _number(payload["top_p"], "top_p", low=0, high=1, why="must be a number from 0 to 1")
    stop = payload.get("stop_sequences")
    if stop:
        if not isinstance(stop, list) or not all(isinstance(item, str) for item in stop):
            raise _refuse("stop_sequences", "must be an array of strings")
        request["stop"] = stop
    request.update(_tools_to_openai(payload))
    metadata = payload.get("metadata")
    if metadata is not None:
        metadata = _object(metadata, "metadata")
        for name in metadata.keys() - {"user_id"}:
            raise _refuse(f"metadata.{name}", "only metadata.user_id can be translated")
        if metadata.get("user_id") is not None:
            request["user"] = _text(metadata["user_id"], "metadata.user_id")
    return request


def _openai_content(parts: list[JSON]) -> str | list[JSON]:
    """One text part is sent as a string, which every OpenAI-compatible server reads."""
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def _text_parts(content: object, where: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    parts = []
    for position, block in enumerate(_array(content, where)):
        block = _object(block, f"{where}.{position}")
        if block.get("type") != "text":
            raise _refuse(f"{where}.{position}.type", "only text blocks can be translated here")
        _object(block, f"{where}.{position}", _TEXT_BLOCK_FIELDS)
        parts.append(_text_part(block, f"{where}.{position}"))
    return parts


def _text_part(block: JSON, where: str) -> JSON:
    if block.get("citations"):
        raise _refuse(f"{where}.citations", "citations cannot be translated for an OpenAI-compatible model")
    return {"type": "text", "text": _text(block.get("text"), f"{where}.text")}


def _messages_to_openai(message: JSON, where: str) -> list[JSON]:
    role, content = message.get("role"), message.get("content")
    if role not in ("user", "assistant"):
        raise _refuse(f"{where}.role", "must be user or assistant")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    tool_messages: list[JSON] = []
    parts: list[JSON] = []
    tool_calls: list[JSON] = []
    for position, block in enumerate(_array(content, f"{where}.content")):
        at = f"{where}.content.{position}"
        block = _object(block, at)
        kind = block.get("type")
        if kind in _BLOCK_FIELDS:
            _object(block, at, _BLOCK_FIELDS[kind])
        if kind == "tool_use" and block.get("caller") not in (None, {"type": "direct"}):
            raise _refuse(f"{at}.caller", "only tool calls the model made itself can be translated")
        if kind == "text":
            parts.append(_text_part(block, at))
        elif kind == "image" and role == "user":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block.get("source"), f"{at}.source")}})
        elif kind == "tool_result" and role == "user":
            tool_messages.append(_tool_message(block, at))
        elif kind == "tool_use" and role == "assistant":
            tool_calls.append({
                "id": _text(block.get("id"), f"{at}.id"),
                "type": "function",
                "function": {"name": _text(block.get("name"), f"{at}.name"),
                             "arguments": _json(_object(block.get("input"), f"{at}.input"))},
            })
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            continue  # the model's earlier reasoning: OpenAI's API takes none back
        else:
            raise _refuse(f"{at}.type", f"a {role} `{kind}` block cannot be translated for an OpenAI-compatible model")
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
    source = _object(source, where)
    kind = source.get("type")
    if kind in _SOURCE_FIELDS:
        _object(source, where, _SOURCE_FIELDS[kind])
    if kind == "base64":
        mime = _text(source.get("media_type"), f"{where}.media_type")
        return f"data:{mime};base64,{_text(source.get('data'), f'{where}.data')}"
    if kind == "url":
        return _text(source.get("url"), f"{where}.url")
    raise _refuse(f"{where}.type", "only base64 and url image sources can be translated")


def _tool_message(block: JSON, where: str) -> JSON:
    if block.get("is_error"):
        raise _refuse(f"{where}.is_error", "an OpenAI-compatible model cannot be told a tool failed")
    content = block.get("content")
    message: JSON = {"role": "tool", "tool_call_id": _text(block.get("tool_use_id"), f"{where}.tool_use_id")}
    if content is None or isinstance(content, str):
        message["content"] = content or ""
        return message
    parts = []
    for position, item in enumerate(_array(content, f"{where}.content")):
        item = _object(item, f"{where}.content.{position}")
        if item.get("type") != "text":
            raise _refuse(f"{where}.content.{position}.type",
                          "an OpenAI tool message holds text only; this tool result cannot be translated")
        _object(item, f"{where}.content.{position}", _TEXT_BLOCK_FIELDS)
        parts.append(_text_part(item, f"{where}.content.{position}"))
    message["content"] = _openai_content(parts) if parts else ""
    return message


def _tools_to_openai(payload: JSON) -> JSON:
    tools = []
    for position, tool in enumerate(_array(payload.get("tools") or [], "tools")):
        at = f"tools.{position}"
        tool = _object(tool, at)
        if tool.get("type") not in (None, "custom"):
            raise _refuse(f"{at}.type", f"the server tool {tool.get('type')!r} cannot be translated for an "
                          "OpenAI-compatible model")
        for name in tool.keys() - _TOOL_FIELDS - _TOOL_HINTS:
            raise _refuse(f"{at}.{name}", "cannot be translated for an OpenAI-compatible model")
        function: JSON = {"name": _text(tool.get("name"), f"{at}.name"),
                          "parameters": _object(tool.get("input_schema"), f"{at}.input_schema")}
        if tool.get("description") is not None:
            function["description"] = _text(tool["description"], f"{at}.description")
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        tools.append({"type": "function", "function": function})
    choice = payload.get("tool_choice")
    if not tools:
        if choice is not None and _object(choice, "tool_choice").get("type") not in ("auto", "none"):
            raise _refuse("tool_choice", "a tool choice needs `tools`")
        return {}
    request: JSON = {"tools": tools}
    if choice is None:
        return request
    choice = _object(choice, "tool_choice", frozenset({"type", "name", "disable_parallel_tool_use"}))
    kind = choice.get("type")
    if kind == "auto":
        request["tool_choice"] = "auto"
    elif kind == "any":
        request["tool_choice"] = "required"
    elif kind == "none":
        request["tool_choice"] = "none"
    elif kind == "tool":
        request["tool_choice"] = {"type": "function", "function": {"name": _text(choice.get("name"), "tool_choice.name")}}
    else:
        raise _refuse("tool_choice.type", "must be auto, any, tool or none")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        request["parallel_tool_calls"] = False
    return request


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --- usage -------------------------------------------------------------------------------------

def _count(container: object, name: str) -> int | None:
    value = container.get(name) if isinstance(container, dict) else None
    return value if type(value) is int and value >= 0 else None


@dataclass
class _Tokens:
    """Token counts in Anthropic's split: input without the cache parts."""

    input: int = 0
    cache_creation: int = 0
    cache_read: int = 0
    output: int = 0
    thinking: int = 0
    reported: bool = False

    def read_anthropic(self, usage: object) -> None:
        """Take the counts an Anthropic ``usage`` holds; the stream's are cumulative."""
        for attr, name in (("input", "input_tokens"), ("cache_creation", "cache_creation_input_tokens"),
                           ("cache_read", "cache_read_input_tokens"), ("output", "output_tokens")):
            value = _count(usage, name)
            if value is not None:
                setattr(self, attr, value)
                self.reported = self.reported or attr in ("input", "output")
        thinking = _count(usage.get("output_tokens_details") if isinstance(usage, dict) else None, "thinking_tokens")
        if thinking is not None:
            self.thinking = thinking

    @classmethod
    def from_openai(cls, usage: object) -> _Tokens:
        prompt, completion = _count(usage, "prompt_tokens") or 0, _count(usage, "completion_tokens") or 0
        details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
        cached, written = _count(details, "cached_tokens") or 0, _count(details, "cache_write_tokens") or 0
        details = usage.get("completion_tokens_details") if isinstance(usage, dict) else None
        reasoning = _count(details, "reasoning_tokens")
        return cls(input=max(prompt - cached - written, 0), cache_creation=min(written, prompt),
                   cache_read=min(cached, max(prompt - written, 0)), output=completion, thinking=reasoning or 0,
                   reported=isinstance(usage, dict))

    @property
    def prompt(self) -> int:
        return self.input + self.cache_creation + self.cache_read

    def usage(self) -> Usage:
        return Usage(input_tokens=self.prompt, output_tokens=self.output, reported=True)

    def openai(self) -> JSON:
        usage: JSON = {"prompt_tokens": self.prompt, "completion_tokens": self.output,
                       "total_tokens": self.prompt + self.output}
        if self.cache_read or self.cache_creation:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cache_read, "cache_write_tokens": self.cache_creation}
        if self.thinking:
            usage["completion_tokens_details"] = {"reasoning_tokens": self.thinking}
        return usage

    def anthropic(self) -> JSON:
        usage: JSON = {"input_tokens": self.input, "output_tokens": self.output,
                       "cache_creation_input_tokens": self.cache_creation, "cache_read_input_tokens": self.cache_read}
        if self.thinking:
            usage["output_tokens_details"] = {"thinking_tokens": self.thinking}
        return usage


def response_usage(message: dict[str, Any]) -> Usage | None:
    """The usage of an Anthropic ``message``; ``None`` when absent or malformed."""
    usage = message.get("usage")
    if _count(usage, "input_tokens") is None or _count(usage, "output_tokens") is None:
        return None
    tokens = _Tokens()
    tokens.read_anthropic(usage)
    return tokens.usage()


class UsageMeter:
    """Reads the usage out of an Anthropic stream: input from
    ``message_start``, output from ``message_delta``'s cumulative count."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.output_chars = 0
        self._tokens = _Tokens()

    def feed(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            self._tokens.read_anthropic(message.get("usage") if isinstance(message, dict) else None)
        elif kind == "message_delta":
            self._tokens.read_anthropic(event.get("usage"))
        elif kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict):
                for name in ("text", "partial_json", "thinking"):
                    value = delta.get(name)
                    if isinstance(value, str):
                        self.output_chars += len(value)
            return
        else:
            return
        if self._tokens.reported:
            self.usage = self._tokens.usage()


# --- whole answers -----------------------------------------------------------------------------

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
            tool_calls.append({"id": block.get("id"), "type": "function",
                               "function": {"name": block.get("name"), "arguments": _json(block.get("input") or {})}})
        else:
            raise UpstreamError(f"the provider's answer holds a {kind!r} block, which chat completions cannot express")
    reply: JSON = {"role": "assistant", "content": "".join(text) if text or not tool_calls else None, "refusal": None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    if thinking:
        reply["reasoning_content"] = "".join(thinking)
    tokens = _Tokens()
    tokens.read_anthropic(message.get("usage"))
    return {
        "id": message.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": reply, "logprobs": None,
                     "finish_reason": _FINISH_FROM_ANTHROPIC.get(message.get("stop_reason") or "end_turn", "stop")}],
        "usage": tokens.openai(),
    }


def _stop_reason(finish_reason: object, *, tool_calls: bool, refused: bool) -> str:
    if refused:
        return "refusal"
    reason = _STOP_FROM_OPENAI.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"
    # Some OpenAI-compatible servers say "stop" after tool calls; Anthropic clients run tools on "tool_use".
    return "tool_use" if tool_calls and reason == "end_turn" else reason


def _tool_input(arguments: object, name: object) -> JSON:
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
    reply = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content: list[JSON] = []
    for text in (reply.get("content"), reply.get("refusal")):
        if isinstance(text, str) and text:
            content.append({"type": "text", "text": text})
    calls = reply.get("tool_calls") or []
    for call in calls:
        function = call.get("function") or {}
        name = function.get("name")
        content.append({"type": "tool_use", "id": call.get("id") or f"toolu_{uuid.uuid4().hex}", "name": name,
                        "input": _tool_input(function.get("arguments"), name)})
    refused = bool(reply.get("refusal"))
    return {
        "id": completion.get("id") or f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(choice.get("finish_reason"), tool_calls=bool(calls), refused=refused),
        "stop_sequence": None,
        "usage": _Tokens.from_openai(completion.get("usage")).anthropic(),
    }


# --- streams -----------------------------------------------------------------------------------

def _stream_error(event: JSON) -> UpstreamError:
    error = event.get("error") if isinstance(event.get("error"), dict) else {}
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
        self._tokens = _Tokens()
        self._finished = False
        self._usage_sent = False

    def _chunk(self, delta: JSON, finish_reason: str | None = None) -> JSON:
        assert self._base is not None
        return {**self._base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "error":
            raise _stream_error(event)
        if kind == "message_start":
            message = event.get("message") if isinstance(event.get("message"), dict) else {}
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
            return [self._chunk({}, _FINISH_FROM_ANTHROPIC.get(reason, "stop"))]
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
            arguments = _json(block["input"]) if block.get("input") else ""
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
            call = {"index": self._tools[index], "function": {"arguments": fragment}}  # type: ignore[index]
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
        self._tokens: _Tokens | None = None
        self._done = False

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if self._done:
            if any((choice.get("delta") or {}) for choice in chunk.get("choices") or ()):
                raise UpstreamError("the provider's stream went on after it ended")
            return []
        events: list[JSON] = []
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._tokens = _Tokens.from_openai(usage)
        if not self._started:
            self._started = True
            events.append({"type": "message_start", "message": {
                "id": chunk.get("id") or f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant",
                "model": self.model, "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": (self._tokens or _Tokens()).anthropic()}})
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
            _tool_input("".join(self._tool.arguments), self._tool.name)
        elif not self._text_open:
            return []
        self._tool, self._text_open = None, False
        return [{"type": "content_block_stop", "index": self._blocks - 1}]

    def _end(self) -> list[JSON]:
        self._done = True
        tokens = self._tokens or _Tokens()
        stop = _stop_reason(self._finish, tool_calls=bool(self._tools), refused=self._refused)
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
