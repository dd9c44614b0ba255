"""What every HTTP provider adapter shares: one pooled ``httpx`` client per
provider with its key sent the provider's way, server-sent events read as
``(event, data)`` pairs, and upstream failures mapped to the status the
client should see, with the key redacted from every message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from schema.catalog import ProviderSpec
from schema.errors import GatewayTimeout, ProviderUnavailable, UpstreamError


def auth_headers(provider: ProviderSpec, secret: str | None) -> dict[str, str]:
    if not secret or provider.auth == "none":
        return {}
    if provider.auth == "bearer":
        return {"authorization": f"Bearer {secret}"}
    if provider.auth == "key":
        return {"authorization": f"Key {secret}"}
    return {str(provider.auth): secret}


class ProviderHTTP:
    def __init__(self, provider: ProviderSpec, *, connect_timeout: float, headers: dict[str, str] | None = None) -> None:
        self.name = provider.name
        self._secret = provider.api_key.get_secret_value() if provider.api_key else None
        self.client = httpx.AsyncClient(
            base_url=provider.base_url or "",
            headers={"content-type": "application/json", **(headers or {}), **provider.headers,
                     **auth_headers(provider, self._secret)},
            # The pool enforces the first-event, idle and total timeouts; the
            # read timeout is only a backstop.
            timeout=httpx.Timeout(provider.timeout, connect=provider.connect_timeout or connect_timeout),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def post_json(self, path: str, body: dict[str, Any], *, params: dict[str, str] | None = None) -> dict[str, Any]:
        """POST a JSON body; the answer must be a JSON object."""
        try:
            response = await self.client.post(path, content=orjson.dumps(body), params=params)
        except httpx.HTTPError as error:
            raise self.transport_error(error) from None
        if response.status_code >= 400:
            raise self.status_error(response.status_code, response.content, response.headers)
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise UpstreamError(f"provider {self.name!r} sent a body that is not a JSON object")
        return answer

    async def get_json(self, path: str) -> Any:
        try:
            response = await self.client.get(path)
        except httpx.HTTPError as error:
            raise self.transport_error(error) from None
        if response.status_code >= 400:
            raise self.status_error(response.status_code, response.content, response.headers)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"provider {self.name!r} sent a body that is not JSON") from None

    async def events(self, path: str, body: dict[str, Any], *, params: dict[str, str] | None = None,
                     ) -> AsyncIterator[tuple[str | None, dict[str, Any] | str]]:
        """POST a JSON body and yield its server-sent events as ``(event,
        data)``: ``data`` parsed when it is a JSON object, else the raw text
        (``[DONE]``). Comments and empty events are skipped."""
        try:
            async with self.client.stream("POST", path, content=orjson.dumps(body), params=params) as response:
                if response.status_code >= 400:
                    raise self.status_error(response.status_code, await response.aread(), response.headers)
                event: str | None = None
                data: list[str] = []
                async for line in response.aiter_lines():
                    if line:
                        field, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if field == "data":
                            data.append(value)
                        elif field == "event":
                            event = value
                        continue
                    if data:
                        yield event, self._parse("\n".join(data))
                    event, data = None, []
                if data:
                    yield event, self._parse("\n".join(data))
        except httpx.HTTPError as error:
            raise self.transport_error(error) from None

    def _parse(self, data: str) -> dict[str, Any] | str:
        if data.strip() == "[DONE]":
            return "[DONE]"
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"provider {self.name!r} sent a malformed stream event") from None
        if not isinstance(parsed, dict):
            raise UpstreamError(f"provider {self.name!r} sent a stream event that is not an object")
        return parsed

    def redact(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if self._secret else text

    def status_error(self, status: int, content: bytes, headers: httpx.Headers | dict[str, str]) -> UpstreamError:
        """An upstream error status as the client should see it: 429 stays
        429 with its ``retry-after``; the provider refusing the gateway's key
        or account (401, 402, 403) is the gateway's fault (502), never the
        client's; other client errors pass through (a 422, some providers'
        validation error, as the 400 the gateway's own are); server errors
        become 502."""
        try:
            detail = orjson.loads(content)["error"]
            message = detail["message"] if isinstance(detail, dict) else str(detail)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            message = content[:200].decode(errors="replace")
        message = self.redact(f"provider {self.name!r} answered {status}: {message}")
        retry_after = _seconds(headers.get("retry-after"))
        if status == 429:
            return UpstreamError(message, status=429, retry_after=retry_after)
        if status in (401, 403):
            return ProviderUnavailable(f"provider {self.name!r} refused the gateway's credentials", status=502)
        if status == 402:  # the gateway's own account with the provider is out of credit
            return ProviderUnavailable(f"provider {self.name!r} refused the gateway's account (billing)", status=502)
        if 400 <= status < 500:
            return UpstreamError(message, status=status if status in (400, 404, 413) else 400)
        return UpstreamError(message, status=502, retry_after=retry_after)

    def transport_error(self, error: httpx.HTTPError) -> UpstreamError | GatewayTimeout:
        """Not reaching the provider at all is the whole provider's failure;
        losing it mid-answer may be one model's."""
        if isinstance(error, httpx.ConnectTimeout):
            return ProviderUnavailable(f"provider {self.name!r} did not accept a connection in time", status=504)
        if isinstance(error, httpx.TimeoutException):
            return GatewayTimeout(f"provider {self.name!r} timed out ({type(error).__name__})")
        if isinstance(error, httpx.ConnectError):
            return ProviderUnavailable(self.redact(f"provider {self.name!r} is unreachable: {type(error).__name__}"))
        return UpstreamError(self.redact(f"provider {self.name!r} broke off the connection: {type(error).__name__}"))


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
