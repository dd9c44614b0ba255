"""What providers' own model lists add to the configured catalog.

A provider's ``/models`` answer, once parsed, is a ``ProviderListing``: the
models it listed (``UpstreamModel``) and how its last refresh went. The
listing is kept as the provider described it, never priced: prices are
decided each time a catalog is built (``discover``), so a restart with a new
markup or a new price list re-prices what was listed before.

A listed model the config already routes through that provider adds
nothing, nor does one of a kind the provider's adapter does not serve. Any
other is served as ``provider/id`` only with a price, the first of: an entry
of the same id and kind that has one, the price list's price under the
provider's ``price_provider`` (or its own name), the price the provider
published in its list (OpenRouter-style ``pricing``); an images model only
the first, since a price per image is never a list's. Without one it is
reported as unpriced and not served, unless ``[pricing] unpriced = "free"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, DecimalException
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schema.catalog import GatewayConfig, Modality, ModelKind, ProviderSpec, SellPrice
from schema.jobs import Price
from schema.prices import PriceList, sell_price

ListingStatus = Literal["unknown", "ok", "error"]


class UpstreamModel(BaseModel):
    """One model as a provider's own model list describes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=256)
    name: str | None = None
    description: str | None = None
    created: int | None = Field(None, description="unix seconds, when the provider says")
    kind: ModelKind = "chat"
    modalities: tuple[Modality, ...] = ("text",)
    context_length: int | None = Field(None, gt=0)
    max_output_tokens: int | None = Field(None, gt=0)
    # US dollars per million tokens, as the provider published them in its list.
    input_usd_per_mtok: Decimal | None = Field(None, ge=0, allow_inf_nan=False)
    output_usd_per_mtok: Decimal | None = Field(None, ge=0, allow_inf_nan=False)

    @property
    def published_price(self) -> bool:
        return self.input_usd_per_mtok is not None and self.output_usd_per_mtok is not None


class ProviderListing(BaseModel):
    """A provider's last good model list (``models``, fetched at
    ``listed_at``) and the outcome of its last refresh (``refreshed_at``,
    ``error`` when it failed: the models are then the older good ones)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: tuple[UpstreamModel, ...] = ()
    listed_at: float | None = None
    refreshed_at: float | None = None
    error: str | None = None

    @property
    def status(self) -> ListingStatus:
        if self.refreshed_at is None:
            return "unknown"
        return "error" if self.error is not None else "ok"

    def failed(self, error: str, at: float) -> ProviderListing:
        """This listing after a refresh that failed: the same models, kept."""
        return self.model_copy(update={"refreshed_at": at, "error": error})


@dataclass(frozen=True, slots=True)
class Discovery:
    """What one provider's listing adds: models to serve as ``provider/id``
    with their prices, and listed models left out for want of a price (also
    served, free, when the config says unpriced models are)."""

    served: tuple[tuple[UpstreamModel, SellPrice], ...] = ()
    unpriced: tuple[str, ...] = ()

    @property
    def served_ids(self) -> frozenset[str]:
        return frozenset(model.id for model, _ in self.served)


def known_upstream_ids(config: GatewayConfig, provider: str) -> set[str]:
    """The model ids ``provider`` already serves through the config, as the provider knows them."""
    spec = config.providers[provider]
    known: set[str] = set()
    for served in spec.models:
        entry = config.models.get(served)
        known.add(entry.upstream_id(provider) if entry is not None and provider in entry.providers else served)
    for entry in config.models.values():
        if provider in entry.providers:
            known.add(entry.upstream_id(provider))
    return known


def discover(config: GatewayConfig, provider: str, models: Iterable[UpstreamModel], price_list: PriceList | None,
             credits_per_usd: Decimal) -> Discovery:
    """Price the models ``provider`` listed that the config does not route through it."""
    spec = config.providers[provider]
    known = known_upstream_ids(config, provider)
    served: list[tuple[UpstreamModel, SellPrice]] = []
    unpriced: list[str] = []
    for model in models:
        # An id the config gives an entry of its own is the config's, whatever a list says;
        # a kind the provider's adapter cannot serve is not routable.
        if model.id in known or f"{provider}/{model.id}" in config.models or not spec.serves(model.kind):
            continue
        known.add(model.id)  # a list naming a model twice serves it once
        price = _price(config, spec, model, price_list, credits_per_usd)
        if price is None:
            unpriced.append(model.id)
            if config.pricing.unpriced == "free":
                served.append((model, SellPrice(price=Price(), source="unpriced")))
            continue
        served.append((model, price))
    served.sort(key=lambda pair: pair[0].id)
    return Discovery(tuple(served), tuple(sorted(unpriced)))


def _price(config: GatewayConfig, provider: ProviderSpec, model: UpstreamModel, price_list: PriceList | None,
           credits_per_usd: Decimal) -> SellPrice | None:
    markup = config.pricing.markup_percent
    entry = config.models.get(model.id)
    if entry is not None and entry.kind == model.kind and model.id in config.prices \
            and config.prices[model.id].source != "unpriced":
        return config.prices[model.id]
    if model.kind == "images":
        return None  # a price per image is only ever the config's: lists have token prices
    list_provider = provider.price_provider or provider.name
    if price_list is not None and provider.adapter != "mock" and price_list.knows(list_provider):
        listed = price_list.lookup(list_provider, model.id)
        if listed is not None:
            sides = _sold((listed.input_usd_per_mtok, listed.output_usd_per_mtok), credits_per_usd, markup)
            if sides is not None:
                return SellPrice(price=Price(input_per_mtok=sides[0], output_per_mtok=sides[1]),
                                 source=f"{price_list.name}:{listed.provider}:{listed.model}")
    if model.input_usd_per_mtok is not None and model.output_usd_per_mtok is not None:
        sides = _sold((model.input_usd_per_mtok, model.output_usd_per_mtok), credits_per_usd, markup)
        if sides is not None:
            return SellPrice(price=Price(input_per_mtok=sides[0], output_per_mtok=sides[1]),
                             source=f"published:{provider.name}:{model.id}")
    return None


def _sold(usd: tuple[Decimal, Decimal], credits_per_usd: Decimal, markup: Decimal) -> tuple[Decimal, Decimal] | None:
    """Both sides in credits, or None when a published price cannot be
    converted exactly (a model is better unserved than mispriced)."""
    try:
        return sell_price(usd[0], credits_per_usd, markup), sell_price(usd[1], credits_per_usd, markup)
    except DecimalException:
        return None
