"""Adapter for any OpenAI-compatible upstream (``/chat/completions``).

The request body passes through unchanged but for ``model`` (the provider's
own id) and, in streams, ``stream_options.include_usage`` (always asked for,
so the gateway can charge what was used whatever the client asked).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from schema.catalog import ProviderSpec
from schema.errors import GatewayTimeout, UpstreamError


class OpenAIAdapter:
    def __init__(self, provider: ProviderSpec, *, connect_timeout: float = 10.0) -> None:
        self._provider = provider
        self._secret = provider.api_key.get_secret_value() if provider.api_key else None
        headers = {"content-type": "application/json", **provider.headers}
        if self._secret:
            headers["authorization"] = f"Bearer {self._secret}"
        self._client = httpx.AsyncClient(
            base_url=provider.base_url or "",
            headers=headers,
            timeout=httpx.Timeout(provider.timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def complete(self, model: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = {**payload, "model": model, "stream": False}
        body.pop("stream_options", None)
        try:
            response = await self._client.post("/chat/completions", content=orjson.dumps(body))
        except httpx.HTTPError as error:
            raise self._transport_error(error) from None
        if response.status_code >= 400:
            raise self._status_error(response.status_code, response.content, response.headers)
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            raise UpstreamError(f"provider {self._provider.name!r} sent a body that is not a JSON object")
        return body

    async def stream(self, model: str, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        options = payload.get("stream_options")
        body = {
            **payload,
            "model": model,
            "stream": True,
            "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True},
        }
        try:
            async with self._client.stream("POST", "/chat/completions", content=orjson.dumps(body)) as response:
                if response.status_code >= 400:
                    raise self._status_error(response.status_code, await response.aread(), response.headers)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, `event:` lines
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        chunk = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        raise UpstreamError(f"provider {self._provider.name!r} sent a malformed stream event") from None
                    if not isinstance(chunk, dict):
                        raise UpstreamError(f"provider {self._provider.name!r} sent a stream event that is not an object")
                    if chunk.get("error"):
                        raise self._status_error(502, data.encode(), response.headers)
                    yield chunk
        except httpx.HTTPError as error:
            raise self._transport_error(error) from None
        raise UpstreamError(f"provider {self._provider.name!r} ended the stream without [DONE]")

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if self._secret else text

    def _status_error(self, status: int, content: bytes, headers: httpx.Headers) -> UpstreamError:
        name = self._provider.name
        try:
            detail = orjson.loads(content)["error"]
            message = detail["message"] if isinstance(detail, dict) else str(detail)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            message = content[:200].decode(errors="replace")
        message = self._redact(f"provider {name!r} answered {status}: {message}")
        retry_after = _seconds(headers.get("retry-after"))
        if status == 429:
            return UpstreamError(message, status=429, retry_after=retry_after)
        if status in (401, 403):
            # The gateway's credentials were refused, not the client's.
            return UpstreamError(self._redact(f"provider {name!r} refused the gateway's credentials"), status=502)
        if 400 <= status < 500:
            return UpstreamError(message, status=status if status in (400, 404, 413, 422) else 400)
        return UpstreamError(message, status=502, retry_after=retry_after)

    def _transport_error(self, error: httpx.HTTPError) -> UpstreamError | GatewayTimeout:
        name = self._provider.name
        if isinstance(error, httpx.TimeoutException):
            return GatewayTimeout(f"provider {name!r} timed out ({type(error).__name__})")
        return UpstreamError(self._redact(f"provider {name!r} is unreachable: {type(error).__name__}"))


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
