"""Where providers' last good model lists are kept, so that a restart and
every ingress process serve the same refreshed catalog.

Two implementations behind one small interface: Redis (distributed, one hash
of listings per namespace and a version counter that every ingress follows:
``scheduler.listing_store.redis``) and a JSON file in the data directory
(embedded, one process: ``scheduler.listing_store.file``). ``save`` writes
some providers' listings and reads back all of them in one step, so the
catalog built from its answer includes every refresh saved before it,
whichever process made it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from pydantic import ValidationError

from scheduler.listings import ProviderListing

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


def decode_all(raw: Mapping[bytes, bytes] | Mapping[str, object]) -> Listings:
    """Every stored listing that decodes; one that does not is logged and left out."""
    listings: Listings = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else key
        listing = _decode(name, value)
        if listing is not None:
            listings[name] = listing
    return listings
