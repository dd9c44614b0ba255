"""The interface every provider adapter implements.

An adapter speaks its provider's own wire dialect (``schema.translate``):
``complete`` returns the provider's whole answer, ``stream`` yields its
stream events as objects, and the pool translates both to the client's
dialect when they differ. Failures raise ``UpstreamError`` (or
``GatewayTimeout``) with the status the client should see and a message
that never contains the provider's key. ``embed`` and ``generate_images``
take and return OpenAI's shapes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from schema.translate import Dialect


class ProviderAdapter(Protocol):
    dialect: Dialect

    async def complete(self, model: str, payload: dict[str, Any]) -> dict[str, Any]: ...

    def stream(self, model: str, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]: ...

    async def aclose(self) -> None: ...
