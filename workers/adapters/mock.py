"""The built-in ``mock`` provider: deterministic, offline, streamed echo.

It answers ``You said: <last user message>`` word by word, and counts one
token per whitespace-separated word, so a newcomer's first request works with
no provider configured and tests can predict every byte.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

GREETING = "Hello from the GatewayZ mock provider."


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _reply(payload: dict[str, Any]) -> tuple[str, int]:
    messages = payload.get("messages") or []
    prompt_tokens = sum(len(_text_of(m.get("content")).split()) for m in messages if isinstance(m, dict))
    last_user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    said = _text_of(last_user.get("content")).strip() if last_user else ""
    text = f"You said: {said}" if said else GREETING
    max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens > 0:
        text = " ".join(text.split()[:max_tokens])
    return text, prompt_tokens


class MockAdapter:
    dialect = "openai"

    async def complete(self, model: str, payload: dict[str, Any]) -> dict[str, Any]:
        text, prompt_tokens = _reply(payload)
        completion_tokens = len(text.split())
        return {
            "id": f"chatcmpl-mock{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}
            ],
            "usage": _usage(prompt_tokens, completion_tokens),
        }

    async def stream(self, model: str, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        text, prompt_tokens = _reply(payload)
        words = text.split()
        base = {"id": f"chatcmpl-mock{uuid.uuid4().hex[:24]}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

        yield chunk({"role": "assistant", "content": ""})
        for position, word in enumerate(words):
            yield chunk({"content": word if position == 0 else f" {word}"})
        yield chunk({}, "stop")
        yield {**base, "choices": [], "usage": _usage(prompt_tokens, len(words))}

    async def aclose(self) -> None:
        return None


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
