"""Providers' model lists in Redis (distributed mode): one hash of listings
per namespace and a version counter that every ingress follows."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager

import redis.asyncio as redis

from scheduler.listing_store import Listings, decode_all
from scheduler.listings import ProviderListing
from scheduler.outages import reaching_redis
from scheduler.topology import Topology
from schema.errors import StoreUnavailable


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
        return int(version or 0), decode_all(raw)

    async def version(self) -> int:
        with _reaching_listings():
            return int(await self._client.get(self._version) or 0)

    async def save(self, changed: Mapping[str, ProviderListing]) -> tuple[int, Listings]:
        with _reaching_listings():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self._listings,
                          mapping={name: listing.model_dump_json() for name, listing in changed.items()})
                pipe.incr(self._version)
                pipe.hgetall(self._listings)
                _, version, raw = await pipe.execute()
        return int(version), decode_all(raw)


def _reaching_listings() -> AbstractContextManager[None]:
    return reaching_redis(StoreUnavailable, "the provider listings' Redis")
