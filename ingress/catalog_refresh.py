"""Refreshing the catalog from providers' own model lists, and serving the
same refreshed catalog from every ingress process.

``POST /admin/refresh-providers`` fetches every enabled provider's list at
once (``ingress.model_lists``); a provider that fails keeps its last good
list and reports why. The lists are saved to the runtime's ``ListingStore``
(Redis when the process has one, else a file in the data directory), and a new
immutable ``Catalog`` built from all saved lists replaces the runtime's in
one assignment: a request holds the catalog it started with.

An ingress loads the saved lists when it starts, and, when the store is
shared, checks its version every ``FOLLOW_INTERVAL`` seconds and reloads
when another process saved: every ingress serves a refresh within that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ingress.model_lists import fetch_models
from ingress.runtime import Runtime
from scheduler.catalog import Catalog
from scheduler.listing_store import ListingStore
from scheduler.listings import ProviderListing, UpstreamModel
from schema.errors import GatewayError, InvalidRequest, ProviderNotFound, StoreUnavailable
from schema.prices import GenaiPrices

log = logging.getLogger(__name__)

FOLLOW_INTERVAL = 2.0


@dataclass(frozen=True, slots=True)
class ProviderRefresh:
    """One provider's part of a refresh: public model ids (``provider/id``)."""

    provider: str
    status: Literal["ok", "error", "skipped"]
    error: str | None = None
    listed: int | None = None  # how many models its list named (when it answered)
    added: list[str] = field(default_factory=list)  # now served, not before
    removed: list[str] = field(default_factory=list)  # served before, not now
    unpriced: list[str] = field(default_factory=list)  # listed, not served: no price
    count: int = 0  # model ids routable through it now
    listed_at: float | None = None  # when its current list was fetched


@dataclass(frozen=True, slots=True)
class RefreshReport:
    refreshed_at: float
    providers: list[ProviderRefresh]
    models: int  # routable model ids in the catalog now
    persisted: bool  # saved for the other ingress processes and restarts


class CatalogRefresher:
    def __init__(self, runtime: Runtime, store: ListingStore) -> None:
        self._runtime = runtime
        self._store = store
        self._lock = asyncio.Lock()
        self._version = 0

    async def load(self) -> None:
        """Serve the saved lists, if they changed since this process last did."""
        async with self._lock:
            version, listings = await self._store.load()
            if version != self._version:
                self._runtime.catalog = await self._build(listings)
                self._version = version

    async def follow(self, interval: float = FOLLOW_INTERVAL) -> None:
        """Reload whenever another process saves a refresh (never returns)."""
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                if await self._store.version() != self._version:
                    await self.load()
                failing = False
            except StoreUnavailable as error:
                if not failing:  # once per outage, not every interval
                    log.warning("cannot follow the saved provider model lists: %s", error)
                failing = True

    async def refresh(self, provider: str | None = None) -> RefreshReport:
        catalog = self._runtime.catalog
        if provider is not None:
            if provider not in catalog.providers:
                raise ProviderNotFound(f"No enabled provider is named {provider!r}", param="provider")
            if catalog.provider(provider).adapter == "mock":
                raise InvalidRequest(f"Provider {provider!r} is built in and has no model list to refresh",
                                     param="provider")
        names = [provider] if provider is not None else list(catalog.providers)
        listable = [name for name in names if catalog.provider(name).adapter != "mock"]
        async with self._lock:
            before = self._runtime.catalog
            now = time.time()
            outcomes = await asyncio.gather(*(self._fetch(name) for name in listable))
            last_good = await self._saved(before)
            changed: dict[str, ProviderListing] = {}
            for name, outcome in zip(listable, outcomes, strict=True):
                if isinstance(outcome, str):
                    changed[name] = last_good.get(name, ProviderListing()).failed(outcome, now)
                else:
                    changed[name] = ProviderListing(models=outcome, listed_at=now, refreshed_at=now)
            persisted = True
            try:
                version, listings = await self._store.save(changed)
            except StoreUnavailable as error:
                # This process still serves the refresh; the others and a restart will not see it.
                log.error("cannot save the provider model lists: %s", error)
                persisted, version, listings = False, self._version, {**before.listings, **changed}
            after = await self._build(listings)
            self._runtime.catalog = after
            self._version = version
        return RefreshReport(now, [_report(name, before, after) for name in names], len(after.models()), persisted)

    async def _saved(self, catalog: Catalog) -> Mapping[str, ProviderListing]:
        """The lists as saved now (another process may have refreshed since
        this one last loaded), else as this process serves them."""
        try:
            return {**catalog.listings, **(await self._store.load())[1]}
        except StoreUnavailable:
            return catalog.listings  # the save that follows fails too, and logs why

    async def _fetch(self, name: str) -> tuple[UpstreamModel, ...] | str:
        """The provider's models, or why there are none (already redacted)."""
        try:
            return await fetch_models(self._runtime.catalog.provider(name),
                                      connect_timeout=self._runtime.settings.upstream_connect_timeout)
        except GatewayError as error:
            log.warning("provider %s: model list refresh failed: %s", name, error.message)
            return error.message

    async def _build(self, listings: Mapping[str, ProviderListing]) -> Catalog:
        catalog = self._runtime.catalog
        if not listings:
            return Catalog(catalog.config)
        # Reading the price list and pricing hundreds of listed models is
        # CPU work: off the event loop. The catalog is immutable, so safe.
        price_list = await asyncio.to_thread(GenaiPrices)
        return await asyncio.to_thread(catalog.with_listings, listings, price_list=price_list,
                                       credits_per_usd=self._runtime.settings.credits_per_usd)


def _report(name: str, before: Catalog, after: Catalog) -> ProviderRefresh:
    count = len(after.provider_models(name))
    listing = after.listings.get(name)
    if listing is None:
        return ProviderRefresh(name, "skipped", error="built in: no model list", count=count)
    if listing.error is not None:
        return ProviderRefresh(name, "error", error=listing.error, count=count, listed_at=listing.listed_at)
    old = before.discovered.get(name)
    new = after.discovered[name]
    old_ids = old.served_ids if old is not None else frozenset()
    return ProviderRefresh(
        name, "ok", listed=len(listing.models),
        added=sorted(f"{name}/{model}" for model in new.served_ids - old_ids),
        removed=sorted(f"{name}/{model}" for model in old_ids - new.served_ids),
        unpriced=[f"{name}/{model}" for model in new.unpriced],
        count=count, listed_at=listing.listed_at,
    )


@contextlib.asynccontextmanager
async def open_catalog_refresh(runtime: Runtime) -> AsyncIterator[CatalogRefresher]:
    """The refresher of this ingress process: the saved lists loaded, and
    followed while it runs when other processes share them."""
    store = runtime.listings
    async with contextlib.AsyncExitStack() as stack:
        refresher = CatalogRefresher(runtime, store)
        try:
            await refresher.load()
        except StoreUnavailable as error:
            # The config's models serve; the saved lists arrive with the next refresh or reload.
            log.warning("cannot load the saved provider model lists: %s", error)
        if store.shared:
            follower = asyncio.create_task(refresher.follow(), name="catalog follower")
            stack.push_async_callback(_cancel, follower)
        yield refresher


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
