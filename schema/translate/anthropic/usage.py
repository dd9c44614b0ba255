"""Token usage in Anthropic's shapes: read from an Anthropic answer or
stream, and written in either dialect's shape for translated answers and
streams.

``prompt_tokens`` = ``input_tokens`` + ``cache_creation_input_tokens`` +
``cache_read_input_tokens`` (the cache parts kept as ``prompt_tokens_details``
``cache_write_tokens`` / ``cached_tokens``), ``completion_tokens`` =
``output_tokens``; Anthropic's ``thinking_tokens`` <-> OpenAI's
``reasoning_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schema.jobs import Usage
from schema.translate.anthropic.checks import JSON


def _count(container: object, name: str) -> int | None:
    value = container.get(name) if isinstance(container, dict) else None
    return value if type(value) is int and value >= 0 else None


@dataclass
class Tokens:
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
    def from_openai(cls, usage: object) -> Tokens:
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
            usage["prompt_tokens_details"] = {"cached_tokens": self.cache_read,
                                              "cache_write_tokens": self.cache_creation}
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
    tokens = Tokens()
    tokens.read_anthropic(usage)
    return tokens.usage()


class UsageMeter:
    """Reads the usage out of an Anthropic stream: input from
    ``message_start``, output from ``message_delta``'s cumulative count."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.output_chars = 0
        self._tokens = Tokens()

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
