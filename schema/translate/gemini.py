"""Google Gemini ``generateContent`` answers and ``streamGenerateContent``
streams in OpenAI's shapes, and usage in Gemini's shapes
(``usageMetadata``); requests go the other way in ``gemini_request``.

Answers. Candidates become choices: text parts (not thought summaries) the
content, ``functionCall`` parts ``tool_calls``; ``finishReason`` STOP is
``stop`` (``tool_calls`` when the candidate calls a function), MAX_TOKENS
``length``, the safety family ``content_filter``, anything else ``stop``. A
prompt blocked before any candidate (``promptFeedback.blockReason``) is one
choice with no content and ``content_filter``. Parts a chat completion cannot
carry (generated images, code execution) are left out: the gateway never
asks for them. Usage: ``promptTokenCount`` (+ ``toolUsePromptTokenCount``)
is the prompt, ``candidatesTokenCount`` + ``thoughtsTokenCount`` the
completion, with the cached and reasoning tokens as details.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from schema.jobs import Usage
from schema.translate.gemini_request import request_from_openai, signed_call_id

FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length"}
FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
                      "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"})

__all__ = ["StreamToOpenAI", "UsageMeter", "request_from_openai", "response_to_openai", "response_usage"]


def _tool_call(part: dict[str, Any]) -> dict[str, Any] | None:
    """A ``functionCall`` part as an OpenAI tool call, whole."""
    call = part.get("functionCall")
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    args = call.get("args")
    signature = part.get("thoughtSignature")
    return {"id": signed_call_id(signature if isinstance(signature, str) else None), "type": "function",
            "function": {"name": call["name"], "arguments": orjson.dumps(args if args is not None else {}).decode()}}


def _text_of(parts: list[dict[str, Any]]) -> str:
    return "".join(part["text"] for part in parts if isinstance(part.get("text"), str) and not part.get("thought"))


def _parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [part for part in parts if isinstance(part, dict)] if isinstance(parts, list) else []


def _finish_reason(reason: str, called: bool) -> str:
    if reason in FILTERED:
        return "content_filter"
    if called and reason in ("STOP", "FINISH_REASON_UNSPECIFIED"):
        return "tool_calls"
    return FINISH_REASONS.get(reason, "stop")


def _candidates(body: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """Each candidate with its index (Gemini leaves out an index of 0)."""
    candidates = body.get("candidates")
    if not isinstance(candidates, list):
        return []
    return [(c["index"] if isinstance(c.get("index"), int) else position, c)
            for position, c in enumerate(candidates) if isinstance(c, dict)]


def _blocked(body: dict[str, Any]) -> bool:
    feedback = body.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def _completion_id(body: dict[str, Any]) -> str:
    response_id = body.get("responseId")
    return f"chatcmpl-{response_id}" if isinstance(response_id, str) and response_id else f"chatcmpl-{uuid.uuid4().hex}"


def response_to_openai(body: dict[str, Any], *, model: str) -> dict[str, Any]:
    """A ``GenerateContentResponse`` as a ``chat.completion``."""
    choices = []
    for index, candidate in _candidates(body):
        parts = _parts(candidate)
        calls = [call for call in map(_tool_call, parts) if call is not None]
        text = _text_of(parts)
        message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        reason = candidate.get("finishReason")
        choices.append({"index": index, "message": message, "logprobs": None,
                        "finish_reason": _finish_reason(reason if isinstance(reason, str) else "STOP", bool(calls))})
    if not choices:
        choices = [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": None}, "logprobs": None,
                    "finish_reason": "content_filter" if _blocked(body) else "stop"}]
    completion: dict[str, Any] = {"id": _completion_id(body), "object": "chat.completion", "created": int(time.time()),
                                  "model": model, "choices": sorted(choices, key=lambda choice: choice["index"])}
    usage = _openai_usage(body.get("usageMetadata"))
    if usage is not None:
        completion["usage"] = usage
    return completion


class StreamToOpenAI:
    """``streamGenerateContent`` responses -> ``chat.completion.chunk``
    objects, ending with a usage chunk (``choices: []``).

    Each event is a whole ``GenerateContentResponse`` holding the next parts
    of each candidate: a candidate's first event gives the role chunk, text
    parts give content deltas, and each ``functionCall`` (Gemini sends them
    whole) one tool call chunk with its id, name and all its arguments. The
    usage is cumulative, so only the last one counts."""

    def __init__(self, *, model: str) -> None:
        self.model = model
        self._id: str | None = None
        self._created = int(time.time())
        self._calls: dict[int, int] = {}  # candidate index -> tool calls sent
        self._finished: set[int] = set()
        self._usage: dict[str, Any] | None = None

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self.model,
                "choices": choices, **extra}

    def _delta(self, index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return self._chunk([{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}])

    def _start(self, index: int) -> list[dict[str, Any]]:
        if index in self._calls:
            return []
        self._calls[index] = 0
        return [self._delta(index, {"role": "assistant", "content": ""})]

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if self._id is None:
            self._id = _completion_id(event)
        usage = _openai_usage(event.get("usageMetadata"))
        if usage is not None:
            self._usage = usage
        candidates = _candidates(event)
        if not candidates and _blocked(event) and 0 not in self._finished:
            self._finished.add(0)
            return [*self._start(0), self._delta(0, {}, "content_filter")]
        chunks: list[dict[str, Any]] = []
        for index, candidate in candidates:
            if index in self._finished:
                continue
            chunks += self._start(index)
            parts = _parts(candidate)
            text = _text_of(parts)
            if text:
                chunks.append(self._delta(index, {"content": text}))
            for call in filter(None, map(_tool_call, parts)):
                chunks.append(self._delta(index, {"tool_calls": [{"index": self._calls[index], **call}]}))
                self._calls[index] += 1
            reason = candidate.get("finishReason")
            if isinstance(reason, str) and reason:
                self._finished.add(index)
                chunks.append(self._delta(index, {}, _finish_reason(reason, self._calls[index] > 0)))
        return chunks

    def finish(self) -> list[dict[str, Any]]:
        if self._usage is None:
            return []
        if self._id is None:
            self._id = f"chatcmpl-{uuid.uuid4().hex}"
        return [self._chunk([], usage=self._usage)]


# Usage


def _counts(metadata: object) -> tuple[int, int, int, int] | None:
    """Prompt, completion, cached and reasoning tokens of a ``usageMetadata``;
    ``None`` when absent or malformed. Gemini leaves out counts of 0."""
    if not isinstance(metadata, dict) or not metadata:
        return None
    names = ("promptTokenCount", "toolUsePromptTokenCount", "candidatesTokenCount", "thoughtsTokenCount",
             "cachedContentTokenCount")
    values = [metadata.get(name, 0) for name in names]
    if not all(isinstance(value, int) and not isinstance(value, bool) and value >= 0 for value in values):
        return None
    prompt, tool_prompt, candidates, thoughts, cached = values
    return prompt + tool_prompt, candidates + thoughts, cached, thoughts


def _openai_usage(metadata: object) -> dict[str, Any] | None:
    counts = _counts(metadata)
    if counts is None:
        return None
    prompt, completion, cached, thoughts = counts
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": thoughts}}


def response_usage(body: dict[str, Any]) -> Usage | None:
    counts = _counts(body.get("usageMetadata"))
    if counts is None:
        return None
    return Usage(input_tokens=counts[0], output_tokens=counts[1], reported=True)


class UsageMeter:
    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.output_chars = 0

    def feed(self, event: dict[str, Any]) -> None:
        reported = response_usage(event)
        if reported is not None:
            self.usage = reported
        for _, candidate in _candidates(event):
            for part in _parts(candidate):
                if isinstance(part.get("text"), str):
                    self.output_chars += len(part["text"])
                elif isinstance(part.get("functionCall"), dict):
                    self.output_chars += len(orjson.dumps(part["functionCall"]))
