"""The interface every provider adapter implements.

Adapters speak OpenAI's chat-completions shapes to the pool: ``complete``
returns a ``chat.completion`` body, ``stream`` yields ``chat.completion.chunk``
objects and always ends with a chunk carrying ``usage``. Failures raise
``UpstreamError`` with the status the client should see and a message that
never contains the provider's key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from schema.jobs import Usage


class ProviderAdapter(Protocol):
    async def complete(self, model: str, payload: dict[str, Any]) -> dict[str, Any]: ...

    def stream(self, model: str, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]: ...

    async def aclose(self) -> None: ...


def openai_usage(usage: object) -> Usage | None:
    """Read an OpenAI ``usage`` object; ``None`` when absent or malformed."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int) or prompt < 0 or completion < 0:
        return None
    return Usage(input_tokens=prompt, output_tokens=completion, reported=True)
