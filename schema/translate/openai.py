"""Usage in OpenAI's shapes: ``usage`` on a completion, and on the last chunk
of a stream (``stream_options.include_usage``)."""

from __future__ import annotations

from typing import Any

from schema.jobs import Usage


def response_usage(body: dict[str, Any]) -> Usage | None:
    return read_usage(body.get("usage"))


def read_usage(usage: object) -> Usage | None:
    """Read an OpenAI ``usage`` object; ``None`` when absent or malformed."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int) or prompt < 0 or completion < 0:
        return None
    return Usage(input_tokens=prompt, output_tokens=completion, reported=True)


class UsageMeter:
    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.output_chars = 0

    def feed(self, chunk: dict[str, Any]) -> None:
        reported = response_usage(chunk)
        if reported is not None:
            self.usage = reported
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            self.output_chars += len(delta.get("content") or "") + len(str(delta.get("tool_calls") or ""))
