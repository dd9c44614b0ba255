"""OpenAI chat completions <-> Anthropic Messages: requests, whole answers
and streams, and usage in Anthropic's shapes."""

from __future__ import annotations

from typing import Any

from schema.jobs import Usage


def request_from_openai(payload: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request (no ``model``/``stream``) as an Anthropic Messages request."""
    raise NotImplementedError


def request_to_openai(payload: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request (no ``model``/``stream``) as an OpenAI chat request."""
    raise NotImplementedError


def response_to_openai(message: dict[str, Any], *, model: str) -> dict[str, Any]:
    """An Anthropic ``message`` as a ``chat.completion``."""
    raise NotImplementedError


def response_from_openai(completion: dict[str, Any], *, model: str) -> dict[str, Any]:
    """A ``chat.completion`` as an Anthropic ``message``."""
    raise NotImplementedError


class StreamToOpenAI:
    """Anthropic stream events -> ``chat.completion.chunk`` objects, ending
    with a usage chunk (``choices: []``)."""

    def __init__(self, *, model: str) -> None:
        self.model = model

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def finish(self) -> list[dict[str, Any]]:
        raise NotImplementedError


class StreamFromOpenAI:
    """``chat.completion.chunk`` objects -> Anthropic stream events, from
    ``message_start`` to ``message_stop``."""

    def __init__(self, *, model: str) -> None:
        self.model = model

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def finish(self) -> list[dict[str, Any]]:
        raise NotImplementedError


def response_usage(message: dict[str, Any]) -> Usage | None:
    raise NotImplementedError


class UsageMeter:
    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.output_chars = 0

    def feed(self, event: dict[str, Any]) -> None:
        raise NotImplementedError
