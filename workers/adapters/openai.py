"""Adapter for any OpenAI-compatible upstream (``/chat/completions``,
``/embeddings``, ``/images/generations``).

The request body passes through unchanged but for ``model`` (the provider's
own id), ``max_tokens`` renamed ``max_completion_tokens`` for a provider that
reads only that (``ProviderSpec.output_limit_field``), and, in streams,
``stream_options.include_usage`` (always asked for, so the gateway can charge
what was used whatever the client asked).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import orjson

from schema.catalog import ProviderSpec
from schema.errors import UpstreamError
from schema.jobs import DialectObject
from schema.translate import Dialect
from workers.adapters.http import ProviderHTTP


class OpenAIAdapter:
    dialect: Dialect = "openai"

    def __init__(self, provider: ProviderSpec, *, connect_timeout: float = 10.0) -> None:
        self._http = ProviderHTTP(provider, connect_timeout=connect_timeout)
        self._name = provider.name
        self._renames_max_tokens = provider.output_limit_field == "max_completion_tokens"

    async def aclose(self) -> None:
        await self._http.aclose()

    def _limited(self, payload: DialectObject) -> DialectObject:
        if self._renames_max_tokens and "max_tokens" in payload and "max_completion_tokens" not in payload:
            payload = {**payload, "max_completion_tokens": payload["max_tokens"]}
            del payload["max_tokens"]
        return payload

    async def complete(self, model: str, payload: DialectObject) -> DialectObject:
        body = {**self._limited(payload), "model": model, "stream": False}
        body.pop("stream_options", None)
        return await self._http.post_json("/chat/completions", body)

    async def stream(self, model: str, payload: DialectObject) -> AsyncIterator[DialectObject]:
        options = payload.get("stream_options")
        body = {
            **self._limited(payload),
            "model": model,
            "stream": True,
            "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True},
        }
        # Closed here, not when collected: a stream given up closes its connection at once.
        async with aclosing(self._http.events("/chat/completions", body)) as events:
            async for _, chunk in events:
                if chunk == "[DONE]":
                    return
                if isinstance(chunk, str):
                    continue
                if chunk.get("error"):
                    raise self._http.status_error(502, orjson.dumps(chunk), {})
                yield chunk
        raise UpstreamError(f"provider {self._name!r} ended the stream without [DONE]")

    async def embed(self, model: str, payload: DialectObject) -> DialectObject:
        return self._with_data(await self._http.post_json("/embeddings", {**payload, "model": model}))

    async def generate_images(self, model: str, payload: DialectObject) -> DialectObject:
        return self._with_data(await self._http.post_json("/images/generations", {**payload, "model": model}))

    def _with_data(self, answer: DialectObject) -> DialectObject:
        """What the client gets and is billed for is in ``data``: an answer without it is the provider's fault."""
        if not isinstance(answer.get("data"), list):
            raise UpstreamError(f"provider {self._name!r} sent an answer without a `data` list")
        return answer

