"""Where providers' last good model lists are kept: Redis (shared, versioned)
and a file in the data directory, behind one interface."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as redis

from scheduler.listing_store import ListingStore
from scheduler.listing_store.file import FileListingStore
from scheduler.listing_store.redis import RedisListingStore
from scheduler.listings import ProviderListing, UpstreamModel
from scheduler.topology import Topology
from tests.support.services import REDIS_URL, require_services

PRICED = UpstreamModel(id="vendor/m", name="M", input_usd_per_mtok=Decimal("0.25"), output_usd_per_mtok=Decimal(1))
GOOD = ProviderListing(models=(PRICED,), listed_at=10.0, refreshed_at=10.0)


Damage = Callable[[], Awaitable[None]]


@pytest.fixture(params=["redis", "file"])
async def stored(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[ListingStore, Damage]]:
    """A store, and a way to damage what it holds (as another release or a disk might)."""
    if request.param == "file":
        path = tmp_path / "lists" / "provider-listings.json"

        async def damage_file() -> None:
            path.write_text("not json")

        yield FileListingStore(path), damage_file
        return
    require_services()
    topology = Topology(f"gztest{uuid.uuid4().hex[:8]}")
    client = redis.Redis.from_url(REDIS_URL)

    async def damage_hash() -> None:
        await client.hset(topology.provider_listings, "broken", b'{"models": "nope"}')

    try:
        yield RedisListingStore(client, topology), damage_hash
    finally:
        await client.delete(topology.provider_listings, topology.provider_listings_version)
        await client.aclose()


async def test_an_empty_store(stored: tuple[ListingStore, Damage]) -> None:
    store, _ = stored
    assert await store.load() == (0, {})
    assert await store.version() == 0


async def test_a_save_answers_every_listing_and_raises_the_version(stored: tuple[ListingStore, Damage]) -> None:
    store, _ = stored
    assert await store.save({"router": GOOD}) == (1, {"router": GOOD})
    failed = GOOD.failed("provider 'other' answered 503", at=11.0)
    # Saved by another process meanwhile, or by this one: the answer has both.
    assert await store.save({"other": failed}) == (2, {"router": GOOD, "other": failed})
    assert await store.version() == 2
    version, listings = await store.load()
    assert (version, listings) == (2, {"router": GOOD, "other": failed})
    assert listings["router"].models[0].input_usd_per_mtok == Decimal("0.25"), "prices stay exact"


async def test_a_damaged_store_is_ignored_not_fatal(stored: tuple[ListingStore, Damage]) -> None:
    store, damage = stored
    await store.save({"router": GOOD})
    await damage()
    version, listings = await store.load()
    # Redis loses the damaged entry only; the file, all it held (the next save starts it again).
    assert listings == ({"router": GOOD} if store.shared else {})
    assert (await store.save({"router": GOOD}))[1] == {"router": GOOD}
    assert version < (await store.version())
