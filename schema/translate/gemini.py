"""OpenAI chat completions -> Google Gemini ``generateContent`` requests, and
Gemini's answers and streams back to OpenAI's shapes; usage in Gemini's
shapes (``usageMetadata``)."""

from __future__ import annotations

from typing import Any

from schema.jobs import Usage


def request_from_openai(payload: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request (no ``model``/``stream``) as a ``GenerateContentRequest``."""
    raise NotImplementedError


def response_to_openai(body: dict[str, Any], *, model: str) -> dict[str, Any]:
    """A ``GenerateContentResponse`` as a ``chat.completion``."""
    raise NotImplementedError


class StreamToOpenAI:
    """``streamGenerateContent`` responses -> ``chat.completion.chunk``
    objects, ending with a usage chunk (``choices: []``)."""

    def __init__(self, *, model: str) -> None:
        self.model = model

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def finish(self) -> list[dict[str, Any]]:
        raise NotImplementedError


def response_usage(body: dict[str, Any]) -> Usage | None:
    raise NotImplementedError


class UsageMeter:
    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.output_chars = 0

    def feed(self, event: dict[str, Any]) -> None:
        raise NotImplementedError
