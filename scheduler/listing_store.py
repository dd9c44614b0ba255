"""Where providers' last good model lists are kept, so that a restart and
every ingress process serve the same refreshed catalog.

Two implementations behind one small interface: Redis (distributed: one
hash of listings per namespace and a version counter that every ingress
follows) and a JSON file in the data directory (embedded: one process).
``save`` writes some providers' listings and reads back all of them in one
step, so the catalog built from its answer includes every refresh saved
before it, whichever process made it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

import orjson
import redis.asyncio as redis
from pydantic import ValidationError

from scheduler.listings import ProviderListing
from scheduler.outages import reaching_redis
from scheduler.topology import Topology
from schema.errors import StoreUnavailable

log = logging.getLogger(__name__)

Listings = dict[str, ProviderListing]


class ListingStore(Protocol):
    # Other processes write it too: an ingress follows its version.
    shared: bool

    async def load(self) -> tuple[int, Listings]:
        """The version and every provider's listing."""
        ...

    async def version(self) -> int:
        ...

    async def save(self, changed: Mapping[str, ProviderListing]) -> tuple[int, Listings]:
        """Store these providers' listings; the new version and every listing."""
        ...


def _decode(name: str, raw: object) -> ProviderListing | None:
    try:
        if isinstance(raw, bytes | str):
            return ProviderListing.model_validate_json(raw)
        return ProviderListing.model_validate(raw)
    except ValidationError as error:
        # A listing written by another release, or damaged: the config's models still serve.
        log.warning("ignoring the stored model list of provider %s: %s", name, error.errors()[0]["msg"])
        return None


def _decode_all(raw: Mapping[bytes, bytes] | Mapping[str, object]) -> Listings:
    listings: Listings = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else key
        listing = _decode(name, value)
        if listing is not None:
            listings[name] = listing
    return listings


class RedisListingStore:
    shared = True

    def __init__(self, client: redis.Redis, topology: Topology) -> None:
        self._client = client
        self._listings = topology.provider_listings
        self._version = topology.provider_listings_version

    async def load(self) -> tuple[int, Listings]:
        with _reaching_listings():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.get(self._version)
                pipe.hgetall(self._listings)
                version, raw = await pipe.execute()
        return int(version or 0), _decode_all(raw)

    async def version(self) -> int:
        with _reaching_listings():
            return int(await self._client.get(self._version) or 0)

    async def save(self, changed: Mapping[str, ProviderListing]) -> tuple[int, Listings]:
        with _reaching_listings():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self._listings, mapping={name: listing.model_dump_json() for name, listing in changed.items()})
                pipe.incr(self._version)
                pipe.hgetall(self._listings)
                _, version, raw = await pipe.execute()
        return int(version), _decode_all(raw)


def _reaching_listings() -> AbstractContextManager[None]:
    return reaching_redis(StoreUnavailable, "the provider listings' Redis")


class FileListingStore:
    """``provider-listings.json`` in the data directory, replaced whole on
    each save (write a temporary file, then rename: never half-written)."""

    shared = False

    def __init__(self, path: Path) -> None:
        self.path = path

    async def load(self) -> tuple[int, Listings]:
        try:
            return await asyncio.to_thread(self._read)
        except OSError as error:
            raise StoreUnavailable(f"{self.path} cannot be read: {error}") from error

    async def version(self) -> int:
        return (await self.load())[0]

    async def save(self, changed: Mapping[str, ProviderListing]) -> tuple[int, Listings]:
        try:
            return await asyncio.to_thread(self._write, dict(changed))
        except OSError as error:
            raise StoreUnavailable(f"{self.path} cannot be written: {error}") from error

    def _read(self) -> tuple[int, Listings]:
        try:
            document = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return 0, {}
        except orjson.JSONDecodeError as error:
            log.warning("ignoring %s, which is not JSON: %s", self.path, error)
            return 0, {}
        if not isinstance(document, dict) or not isinstance(document.get("providers"), dict):
            log.warning("ignoring %s, which is not a file of provider model lists", self.path)
            return 0, {}
        version = document.get("version")
        return (version if isinstance(version, int) else 0), _decode_all(document["providers"])

    def _write(self, changed: Listings) -> tuple[int, Listings]:
        version, listings = self._read()
        listings.update(changed)
        version += 1
        document = {"version": version,
                    "providers": {name: listing.model_dump(mode="json") for name, listing in listings.items()}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        os.replace(temporary, self.path)
        return version, listings
