"""Adapter for the Anthropic Messages API (``POST /messages``), native.

The payload is already an Anthropic Messages body; the adapter adds only
``model`` and, in streams, ``"stream": true``. The key goes the provider's
configured way (``x-api-key`` unless the catalog says otherwise), and
``anthropic-version`` is sent unless the provider's headers set their own.

A stream yields every event's data object as Anthropic sends it, ``ping``
included, and is complete only at ``message_stop``: an ``error`` event
raises the ``UpstreamError`` its HTTP twin would (``overloaded_error`` is a
529, so a 502; ``rate_limit_error`` a 429), and a body that ends before
``message_stop`` raises too, so a cut stream never looks complete.
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

ANTHROPIC_VERSION = "2023-06-01"

# The HTTP status behind each error type the API documents, for errors that
# arrive as an ``error`` event after the stream's 200.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicAdapter:
    dialect: Dialect = "anthropic"

    def __init__(self, provider: ProviderSpec, *, connect_timeout: float = 10.0) -> None:
        configured = {name.lower() for name in provider.headers}
        version = {} if "anthropic-version" in configured else {"anthropic-version": ANTHROPIC_VERSION}
        self._http = ProviderHTTP(provider, connect_timeout=connect_timeout, headers=version)
        self._name = provider.name

    async def aclose(self) -> None:
        await self._http.aclose()

    async def complete(self, model: str, payload: DialectObject) -> DialectObject:
        message = await self._http.post_json("/messages", {**payload, "model": model})
        if message.get("type") == "error":
            raise self._event_error(message)
        if not isinstance(message.get("content"), list):
            raise UpstreamError(f"provider {self._name!r} sent a body that is not a message")
        return message

    async def stream(self, model: str, payload: DialectObject) -> AsyncIterator[DialectObject]:
        body = {**payload, "model": model, "stream": True}
        async with aclosing(self._http.events("/messages", body)) as events:
            async for _, data in events:
                if not isinstance(data, dict) or not isinstance(data.get("type"), str):
                    raise UpstreamError(f"provider {self._name!r} sent a stream event without a type")
                if data["type"] == "error":
                    raise self._event_error(data)
                yield data
                if data["type"] == "message_stop":
                    return
        raise UpstreamError(f"provider {self._name!r} ended the stream without message_stop")

    def _event_error(self, data: DialectObject) -> UpstreamError:
        """An ``error`` object as the client should see it: mapped like the
        HTTP status the API gives that error type (an unknown type is the
        provider's fault, a 502), with the key redacted. No ``retry-after``
        travels with an event: the stream's headers went out with its 200."""
        detail = data.get("error")
        kind = str(detail.get("type")) if isinstance(detail, dict) else ""
        return self._http.status_error(ERROR_STATUS.get(kind, 500), orjson.dumps(data), {})
