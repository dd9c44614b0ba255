"""The interface every provider adapter implements.

An adapter speaks its provider's own wire dialect (``schema.translate``):
``complete`` returns the provider's whole answer, ``stream`` yields its
stream events as objects, and the pool translates both to the client's
dialect when they differ. Failures raise ``UpstreamError`` (or
``GatewayTimeout``) with the status the client should see and a message
that never contains the provider's key.

``embed`` and ``generate_images`` are optional capabilities, each its own
protocol: an adapter whose provider has such an endpoint implements it,
taking and returning OpenAI's shapes (``/embeddings``,
``/images/generations``). Which adapter kinds have them is also known to the
ingress (``schema.catalog.ADAPTER_KINDS``), which refuses a request no
candidate can serve before holding credit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from schema.jobs import DialectObject
from schema.translate import Dialect


class ProviderAdapter(Protocol):
    dialect: Dialect

    async def complete(self, model: str, payload: DialectObject) -> DialectObject: ...

    def stream(self, model: str, payload: DialectObject) -> AsyncIterator[DialectObject]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class EmbeddingsAdapter(Protocol):
    async def embed(self, model: str, payload: DialectObject) -> DialectObject:
        """An OpenAI embeddings request (without ``model``) in, its answer out."""
        ...


@runtime_checkable
class ImagesAdapter(Protocol):
    async def generate_images(self, model: str, payload: DialectObject) -> DialectObject:
        """An OpenAI image-generation request (without ``model``) in, its answer out."""
        ...
