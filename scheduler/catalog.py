"""The model catalog: which models are routable and through which providers,
and the listing and search of them.

``route("acme/fake-small")`` pins provider ``acme``; ``route("fake-small")``
returns the model's candidate providers in the configured order. Prices were
resolved when the config was loaded; routing only looks them up.

A catalog is immutable: the config plus what providers' own model lists
added (``scheduler.listings``). A refresh builds a new one and the runtime
swaps it in whole, so a request never sees one half-changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import get_args

from scheduler.listings import Discovery, ProviderListing, UpstreamModel, discover
from schema.catalog import GatewayConfig, Modality, ModelKind, ModelSpec, ProviderSpec, SellPrice
from schema.errors import InvalidRequest, ModelNotFound
from schema.jobs import Price, Route
from schema.prices import PriceList

KINDS: tuple[str, ...] = get_args(ModelKind)
MODALITIES: tuple[str, ...] = get_args(Modality)
MAX_QUERY_LENGTH = 200


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """What routing decided for one requested model id."""

    model: str
    routes: list[Route]
    price: Price
    spec: ModelSpec | None


@dataclass(frozen=True, slots=True)
class ListedModel:
    """A routable model id, its candidate providers in order, its entry (if
    any), its price, and what its provider's list said about it."""

    id: str
    providers: tuple[str, ...]
    spec: ModelSpec | None
    price: SellPrice | None
    about: UpstreamModel | None = None

    @property
    def provider(self) -> str:
        return self.providers[0]

    @property
    def kind(self) -> ModelKind:
        return self.spec.kind if self.spec is not None else "chat"

    @property
    def modalities(self) -> list[Modality]:
        return list(self.spec.modalities) if self.spec is not None else ["text"]

    @property
    def context_length(self) -> int | None:
        return self.spec.context_length if self.spec is not None else None

    @property
    def max_output_tokens(self) -> int | None:
        return self.spec.max_output_tokens if self.spec is not None else None

    @property
    def name(self) -> str | None:
        return self.about.name if self.about is not None else None

    @property
    def description(self) -> str | None:
        return self.about.description if self.about is not None else None


@dataclass(frozen=True, slots=True)
class ModelQuery:
    """``GET /v1/models/search``: every criterion given must hold."""

    text: str | None = None  # every word in the id, name or description
    provider: str | None = None  # one of the model's candidates
    modality: str | None = None  # an input modality (text, image …) or a kind (chat, embeddings, images)
    max_input_price: Decimal | None = None  # credits per million tokens
    max_output_price: Decimal | None = None
    min_context_length: int | None = None


class Catalog:
    def __init__(
        self,
        config: GatewayConfig,
        listings: Mapping[str, ProviderListing] | None = None,
        *,
        price_list: PriceList | None = None,
        credits_per_usd: Decimal = Decimal(1),
    ) -> None:
        """``listings``: providers' own model lists, merged in, priced from
        ``price_list`` at ``credits_per_usd`` (see ``scheduler.listings``)."""
        self.config = config
        self.providers: dict[str, ProviderSpec] = config.providers
        self.listings: Mapping[str, ProviderListing] = MappingProxyType(
            {name: listing for name, listing in (listings or {}).items() if name in config.providers})
        self.discovered: Mapping[str, Discovery] = MappingProxyType({
            name: discover(config, name, listing.models, price_list, credits_per_usd)
            for name, listing in self.listings.items()})
        self._entries: dict[str, ModelSpec] = dict(config.models)
        self._prices: dict[str, SellPrice] = dict(config.prices)
        self._served: dict[str, tuple[str, ...]] = {name: tuple(spec.models) for name, spec in self.providers.items()}
        about: dict[str, UpstreamModel] = {}
        for name, found in self.discovered.items():
            for model, price in found.served:
                pinned = f"{name}/{model.id}"
                self._entries[pinned] = ModelSpec(
                    id=pinned, providers=[name], upstream_ids={name: model.id}, kind=model.kind,
                    modalities=list(model.modalities), context_length=model.context_length,
                    max_output_tokens=model.max_output_tokens)
                self._prices[pinned] = price
                about[pinned] = model
            self._served[name] += tuple(model.id for model, _ in found.served)
        # Nothing changes while a catalog lives: list once, not per request.
        self._listed = {model.id: model for model in self._list(about)}
        self._by_provider: dict[str, list[ListedModel]] = {name: [] for name in self.providers}
        for listed in self._listed.values():
            for name in listed.providers:
                self._by_provider[name].append(listed)

    def with_listings(self, listings: Mapping[str, ProviderListing], *, price_list: PriceList | None,
                      credits_per_usd: Decimal) -> Catalog:
        """A new catalog: the same config with these providers' lists."""
        return Catalog(self.config, listings, price_list=price_list, credits_per_usd=credits_per_usd)

    def provider(self, name: str) -> ProviderSpec:
        return self.providers[name]

    def route(self, model: object) -> ModelRoute:
        if not isinstance(model, str) or not model:
            raise InvalidRequest("`model` is required and must be a string", param="model")
        spec = self._entries.get(model)
        if spec is not None:
            routes = [Route(provider=p, upstream_model=spec.upstream_id(p)) for p in spec.providers]
            return ModelRoute(model, routes, self._price(model), spec)
        provider, _, upstream_model = model.partition("/")
        if upstream_model and provider in self.providers:
            spec = self._entries.get(upstream_model)
            if spec is not None and provider not in spec.providers:
                spec = None
            served = self._served[provider]
            if spec is None and served and upstream_model not in served:
                raise ModelNotFound(f"provider {provider!r} does not serve model {upstream_model!r}", param="model")
            upstream = spec.upstream_ids.get(provider, upstream_model) if spec else upstream_model
            price = self._price(spec.id if spec else model)
            return ModelRoute(model, [Route(provider=provider, upstream_model=upstream)], price, spec)
        for name, served in self._served.items():
            if model in served:
                pinned = f"{name}/{model}"
                return ModelRoute(model, [Route(provider=name, upstream_model=model)], self._price(pinned),
                                  self._entries.get(pinned))
        raise ModelNotFound(f"The model `{model}` does not exist or is not routable", param="model")

    def _price(self, model: str) -> Price:
        """The price resolved at load. Only a provider that lists no models
        can route an id that has none: free if the config says unpriced
        models are, else not routable."""
        resolved = self._prices.get(model)
        if resolved is not None:
            return resolved.price
        if self.config.pricing.unpriced == "free":
            return Price()
        raise ModelNotFound(f"The model `{model}` has no price, so it is not routable", param="model")

    def models(self) -> list[ListedModel]:
        """Every routable model id, sorted, with its candidates."""
        return list(self._listed.values())

    def find(self, model_id: str) -> ListedModel | None:
        return self._listed.get(model_id)

    def provider_models(self, name: str) -> list[ListedModel]:
        """The model ids routable through provider ``name``, sorted."""
        return list(self._by_provider.get(name, ()))

    def _list(self, about: Mapping[str, UpstreamModel]) -> list[ListedModel]:
        prices = self._prices
        listed = {model_id: ListedModel(model_id, tuple(spec.providers), spec, prices.get(model_id),
                                        about.get(model_id))
                  for model_id, spec in self._entries.items()}
        for name, served_ids in self._served.items():
            for served in served_ids:
                pinned = f"{name}/{served}"
                if pinned not in listed:
                    spec = self._entries.get(served)
                    spec = spec if spec and name in spec.providers else None
                    listed[pinned] = ListedModel(pinned, (name,), spec, prices.get(spec.id if spec else pinned))
        return sorted(listed.values(), key=lambda model: model.id)

    def search(self, query: ModelQuery) -> list[ListedModel]:
        """The routable models that meet every criterion of ``query``: the
        best text matches first (the id itself, its last segment, a word of
        the id starting with each search word, the id containing it, then
        the name, then the description), then by id. Raises ``InvalidRequest`` for a criterion that cannot be met by
        any catalog (an unknown provider or modality, a negative price)."""
        _check(query, self.providers)
        terms = query.text.lower().split() if query.text else []
        found: list[tuple[int, str, ListedModel]] = []
        for model in self._listed.values():
            if query.provider is not None and query.provider not in model.providers:
                continue
            if query.modality is not None and query.modality not in (model.kind, *model.modalities):
                continue
            if not _within(model.price, query.max_input_price, query.max_output_price):
                continue
            if query.min_context_length is not None and (model.context_length or 0) < query.min_context_length:
                continue
            relevance = _relevance(model, terms)
            if relevance is not None:
                found.append((relevance, model.id, model))
        found.sort(key=lambda match: match[:2])
        return [model for _, _, model in found]


def _check(query: ModelQuery, providers: Mapping[str, ProviderSpec]) -> None:
    if query.text is not None and len(query.text) > MAX_QUERY_LENGTH:
        raise InvalidRequest(f"`q` is at most {MAX_QUERY_LENGTH} characters", param="q")
    if query.provider is not None and query.provider not in providers:
        raise InvalidRequest(f"`provider`: {query.provider!r} is not an enabled provider "
                             f"(GET /v1/provider lists them)", param="provider")
    if query.modality is not None and query.modality not in (*KINDS, *MODALITIES):
        raise InvalidRequest(f"`modality` is one of {', '.join((*KINDS, *MODALITIES))}", param="modality")
    for param, price in (("max_input_price", query.max_input_price), ("max_output_price", query.max_output_price)):
        if price is not None and (not price.is_finite() or price < 0):
            raise InvalidRequest(f"`{param}` is a number of credits per million tokens, 0 or more", param=param)
    if query.min_context_length is not None and query.min_context_length < 1:
        raise InvalidRequest("`min_context_length` is a number of tokens, 1 or more", param="min_context_length")


def _within(price: SellPrice | None, max_input: Decimal | None, max_output: Decimal | None) -> bool:
    if max_input is None and max_output is None:
        return True
    if price is None:
        return False
    return ((max_input is None or price.price.input_per_mtok <= max_input)
            and (max_output is None or price.price.output_per_mtok <= max_output))


def _relevance(model: ListedModel, terms: list[str]) -> int | None:
    """Lower is better; None when a word matches nowhere."""
    model_id = model.id.lower()
    words = model_id.replace("/", " ").replace("-", " ").replace(".", " ").replace(":", " ").split()
    name = (model.name or "").lower()
    description = (model.description or "").lower()
    score = 0
    for term in terms:
        if model_id == term:
            continue
        if model_id.rsplit("/", 1)[-1] == term:
            score += 1
        elif any(word.startswith(term) for word in words) or model_id.startswith(term):
            score += 2
        elif term in model_id:
            score += 3
        elif term in name:
            score += 4
        elif term in description:
            score += 5
        else:
            return None
    return score
