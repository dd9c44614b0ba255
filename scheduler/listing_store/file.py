"""Providers' model lists in a JSON file in the data directory (embedded
mode: one process)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import orjson

from scheduler.listing_store import Listings, decode_all
from scheduler.listings import ProviderListing
from schema.errors import StoreUnavailable

log = logging.getLogger(__name__)


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
        return (version if isinstance(version, int) else 0), decode_all(document["providers"])

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
