"""Requests, OpenAI chat completions -> Anthropic Messages.

Requests map field by field; whatever has no counterpart is refused with
``Untranslatable`` (400, ``param`` naming the field), except the pure hints
below, which change no answer and are dropped.

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
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from schema.translate import DEFAULT_MAX_TOKENS
from schema.translate.anthropic.checks import (
    JSON,
    absent,
    as_array,
    as_number,
    as_object,
    as_text,
    check_fields,
    refuse,
)

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)

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
    "top_logprobs": (lambda v: v is None or (type(v) is int and v == 0),
                     "Anthropic models return no log probabilities"),
    "logit_bias": (lambda v: v is None or v == {}, "Anthropic models take no token biases"),
    "presence_penalty": (lambda v: v is None or v == 0, "Anthropic models take no presence penalty"),
    "frequency_penalty": (lambda v: v is None or v == 0, "Anthropic models take no frequency penalty"),
    "response_format": (lambda v: v is None or v == {"type": "text"},
                        "Anthropic models take no response format other than text here"),
    "audio": (absent, "Anthropic models produce no audio"),
    "modalities": (lambda v: v is None or v == ["text"], "Anthropic models produce text only"),
    "functions": (lambda v: v is None or v == [], "the deprecated `functions` API cannot be translated; use `tools`"),
    "function_call": (absent, "the deprecated `functions` API cannot be translated; use `tool_choice`"),
    "reasoning_effort": (absent, "cannot be translated for an Anthropic model"),
    "verbosity": (absent, "cannot be translated for an Anthropic model"),
    "web_search_options": (absent, "Anthropic models take no web search options here"),
    "moderation": (absent, "cannot be translated for an Anthropic model"),
}


def request_from_openai(payload: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request (no ``model``/``stream``) as an Anthropic Messages request."""
    check_fields(payload, _OPENAI_HANDLED, _OPENAI_HINTS, _OPENAI_REFUSED, _TO_ANTHROPIC)
    system, messages = _messages_from_openai(as_array(payload.get("messages"), "messages"))
    request: JSON = {"messages": messages}
    if system is not None:
        request["system"] = system
    request["max_tokens"] = _max_tokens(payload)
    if payload.get("temperature") is not None:
        temperature = payload["temperature"]
        as_number(temperature, "temperature", low=0, high=2, why="must be a number from 0 to 2")
        request["temperature"] = as_number(temperature, "temperature", low=0, high=1,
                                         why="Anthropic models take a temperature from 0 to 1")
    if payload.get("top_p") is not None:
        request["top_p"] = as_number(payload["top_p"], "top_p", low=0, high=1, why="must be a number from 0 to 1")
    stop = _stop_sequences(payload.get("stop"))
    if stop:
        request["stop_sequences"] = stop
    request.update(_tools_from_openai(payload))
    for name in ("safety_identifier", "user"):  # the newer name first: OpenAI moved `user` there
        if payload.get(name) is not None:
            request["metadata"] = {"user_id": as_text(payload[name], name)}
            break
    return request


def _max_tokens(payload: JSON) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = payload.get(name)
        if value is None:
            continue
        if type(value) is not int or value < 1:
            raise refuse(name, "must be a positive integer")
        return value
    return DEFAULT_MAX_TOKENS


def _stop_sequences(stop: object) -> list[str]:
    sequences = [stop] if isinstance(stop, str) else [] if stop is None else stop
    if not isinstance(sequences, list) or not all(isinstance(item, str) for item in sequences):
        raise refuse("stop", "must be a string or an array of strings")
    for sequence in sequences:
        if not sequence.strip():
            raise refuse("stop", f"Anthropic models take no stop sequence made only of whitespace ({sequence!r})")
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
        message = as_object(message, where)
        role = message.get("role")
        as_object(message, where, _OPENAI_MESSAGE_FIELDS.get(role) if isinstance(role, str) else None)
        if role == "function":
            raise refuse(f"{where}.role", "the deprecated `function` role cannot be translated; use `tool`")
        if message.get("name") is not None:
            raise refuse(f"{where}.name", "Anthropic models take no participant names")
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
            raise refuse(f"{where}.role", "must be system, developer, user, assistant or tool")
    anthropic_system: str | list[JSON] | None = None
    if system_strings == 1 and len(system) == 1:
        anthropic_system = system[0]["text"]
    elif system:
        anthropic_system = system
    return anthropic_system, [{"role": role, "content": _compact(blocks)} for role, blocks in turns]


def _compact(blocks: list[JSON]) -> str | list[JSON]:
    """One plain text block is the same message as a string, and reads simpler."""
    if len(blocks) == 1 and blocks[0].keys() == {"type", "text"} and blocks[0]["type"] == "text":
        text: str = blocks[0]["text"]
        return text
    return blocks


def _text_blocks(content: object, where: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[JSON] = []
    for position, part in enumerate(as_array(content, where)):
        part = as_object(part, f"{where}.{position}")
        if part.get("type") != "text":
            raise refuse(f"{where}.{position}.type", "only text parts can be translated here")
        as_object(part, f"{where}.{position}", _OPENAI_TEXT_FIELDS)
        text = as_text(part.get("text"), f"{where}.{position}.text")
        if text:  # Anthropic refuses empty text blocks; an empty part says nothing
            blocks.append({"type": "text", "text": text})
    return blocks


def _user_blocks(content: object, where: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[JSON] = []
    for position, part in enumerate(as_array(content, where)):
        at = f"{where}.{position}"
        part = as_object(part, at)
        kind = part.get("type")
        if kind in ("text", "image_url"):
            as_object(part, at, _OPENAI_TEXT_FIELDS if kind == "text" else _OPENAI_IMAGE_FIELDS)
        if kind == "text":
            text = as_text(part.get("text"), f"{at}.text")
            if text:  # Anthropic refuses empty text blocks; an empty part says nothing
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            image = as_object(part.get("image_url"), f"{at}.image_url", frozenset({"url", "detail"}))
            blocks.append({"type": "image", "source": _image_source(image.get("url"), f"{at}.image_url.url")})
        elif kind in ("input_audio", "file"):
            raise refuse(f"{at}.type", f"Anthropic models take no `{kind}` parts here")
        else:
            raise refuse(f"{at}.type", "must be a text or image_url part")
    return blocks


def _image_source(url: object, where: str) -> JSON:
    url = as_text(url, where)
    if url.startswith("data:"):
        match = _DATA_URL.fullmatch(url)
        if match is None:
            raise refuse(where, "a data URL must look like data:<image type>;base64,<data>")
        mime = match["mime"].lower().replace("image/jpg", "image/jpeg")
        if mime not in IMAGE_TYPES:
            raise refuse(where, f"Anthropic models take JPEG, PNG, GIF or WebP images, not {mime}")
        return {"type": "base64", "media_type": mime, "data": match["data"]}
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}
    raise refuse(where, "an image must be an http(s) URL or a base64 data URL")


def _assistant_blocks(message: JSON, where: str) -> list[JSON]:
    for name in ("refusal", "audio", "function_call"):
        if message.get(name) is not None:
            raise refuse(f"{where}.{name}", "cannot be translated for an Anthropic model")
    content = message.get("content")
    blocks = [] if content is None else _text_blocks(content, f"{where}.content")
    for position, call in enumerate(as_array(message.get("tool_calls") or [], f"{where}.tool_calls")):
        at = f"{where}.tool_calls.{position}"
        call = as_object(call, at, frozenset({"id", "type", "function", "index"}))
        if call.get("type", "function") != "function":
            raise refuse(f"{at}.type", "only function tool calls can be translated")
        function = as_object(call.get("function"), f"{at}.function", frozenset({"name", "arguments"}))
        blocks.append({
            "type": "tool_use",
            "id": as_text(call.get("id"), f"{at}.id"),
            "name": as_text(function.get("name"), f"{at}.function.name"),
            "input": _arguments(function.get("arguments"), f"{at}.function.arguments"),
        })
    return blocks


def _arguments(arguments: object, where: str) -> JSON:
    text = as_text(arguments, where)
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise refuse(where, "tool call arguments must be a JSON object")
    return value


def _tool_result(message: JSON, where: str) -> JSON:
    content = message.get("content")
    result: JSON = {"type": "tool_result", "tool_use_id": as_text(message.get("tool_call_id"), f"{where}.tool_call_id")}
    if isinstance(content, str):
        result["content"] = content
    elif content is not None:
        result["content"] = _text_blocks(content, f"{where}.content")
    return result


def _tools_from_openai(payload: JSON) -> JSON:
    tools = []
    for position, tool in enumerate(as_array(payload.get("tools") or [], "tools")):
        at = f"tools.{position}"
        tool = as_object(tool, at)
        if tool.get("type") != "function":
            raise refuse(f"{at}.type", "only function tools can be translated for an Anthropic model")
        as_object(tool, at, frozenset({"type", "function"}))
        function = as_object(tool.get("function"), f"{at}.function",
                           frozenset({"name", "description", "parameters", "strict"}))
        schema = as_object(function.get("parameters") or {"type": "object", "properties": {}},
                           f"{at}.function.parameters")
        if schema.get("type", "object") != "object":
            raise refuse(f"{at}.function.parameters", "Anthropic tools take an object schema")
        converted: JSON = {"name": as_text(function.get("name"), f"{at}.function.name"),
                           "input_schema": {"type": "object", **schema}}
        if function.get("description") is not None:
            converted["description"] = as_text(function["description"], f"{at}.function.description")
        if function.get("strict") is not None:
            converted["strict"] = function["strict"]
        tools.append(converted)
    choice = payload.get("tool_choice")
    parallel = payload.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise refuse("parallel_tool_calls", "must be a boolean")
    if not tools:
        if choice not in (None, "none", "auto"):
            raise refuse("tool_choice", "a tool choice needs `tools`")
        return {}
    if choice is None or choice == "auto":
        anthropic_choice: JSON = {"type": "auto"}
    elif choice == "required":
        anthropic_choice = {"type": "any"}
    elif choice == "none":
        anthropic_choice = {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        as_object(choice, "tool_choice", frozenset({"type", "function"}))
        name = as_object(choice.get("function"), "tool_choice.function", frozenset({"name"})).get("name")
        anthropic_choice = {"type": "tool", "name": as_text(name, "tool_choice.function.name")}
    else:
        raise refuse("tool_choice", "must be auto, required, none or a named function for an Anthropic model")
    if parallel is False and anthropic_choice["type"] != "none":
        anthropic_choice["disable_parallel_tool_use"] = True
    if choice is None and parallel is not False:
        return {"tools": tools}  # Anthropic's default is auto already
    return {"tools": tools, "tool_choice": anthropic_choice}
