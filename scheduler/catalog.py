"""The model catalog: which models are routable and through which providers.

``route("acme/fake-small")`` pins provider ``acme``; ``route("fake-small")``
returns the model's candidate providers in the configured order. Prices were
resolved when the config was loaded; routing only looks them up.
"""

from __future__ import annotations

from dataclasses import dataclass

from schema.catalog import GatewayConfig, ModelSpec, ProviderSpec, SellPrice
from schema.errors import InvalidRequest, ModelNotFound
from schema.jobs import Price, Route


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """What routing decided for one requested model id."""

    model: str
    routes: list[Route]
    price: Price
    spec: ModelSpec | None


@dataclass(frozen=True, slots=True)
class ListedModel:
    """A routable model id, the provider that serves it first, its entry and its price."""

    id: str
    provider: str
    spec: ModelSpec | None
    price: SellPrice | None


class Catalog:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.providers: dict[str, ProviderSpec] = config.providers
        # The config never changes while it is loaded: list once, not per request.
        self._listed = {model.id: model for model in self._list()}

    def provider(self, name: str) -> ProviderSpec:
        return self.providers[name]

    def route(self, model: object) -> ModelRoute:
        if not isinstance(model, str) or not model:
            raise InvalidRequest("`model` is required and must be a string", param="model")
        spec = self.config.models.get(model)
        if spec is not None:
            routes = [Route(provider=p, upstream_model=spec.upstream_id(p)) for p in spec.providers]
            return ModelRoute(model, routes, self._price(model), spec)
        provider, _, upstream_model = model.partition("/")
        if upstream_model and provider in self.providers:
            spec = self.config.models.get(upstream_model)
            if spec is not None and provider not in spec.providers:
                spec = None
            served = self.providers[provider].models
            if spec is None and served and upstream_model not in served:
                raise ModelNotFound(f"provider {provider!r} does not serve model {upstream_model!r}", param="model")
            upstream = spec.upstream_ids.get(provider, upstream_model) if spec else upstream_model
            price = self._price(spec.id if spec else model)
            return ModelRoute(model, [Route(provider=provider, upstream_model=upstream)], price, spec)
        for name, provider_spec in self.providers.items():
            if model in provider_spec.models:
                price = self._price(f"{name}/{model}")
                return ModelRoute(model, [Route(provider=name, upstream_model=model)], price, None)
        raise ModelNotFound(f"The model `{model}` does not exist or is not routable", param="model")

    def _price(self, model: str) -> Price:
        """The price resolved at load. Only a provider that lists no models
        can route an id that has none: free if the config says unpriced
        models are, else not routable."""
        resolved = self.config.prices.get(model)
        if resolved is not None:
            return resolved.price
        if self.config.pricing.unpriced == "free":
            return Price()
        raise ModelNotFound(f"The model `{model}` has no price, so it is not routable", param="model")

    def models(self) -> list[ListedModel]:
        """Every routable model id, sorted, with the provider that serves it first."""
        return list(self._listed.values())

    def find(self, model_id: str) -> ListedModel | None:
        return self._listed.get(model_id)

    def _list(self) -> list[ListedModel]:
        prices = self.config.prices
        listed = {model_id: ListedModel(model_id, spec.providers[0], spec, prices.get(model_id))
                  for model_id, spec in self.config.models.items()}
        for name, provider in self.providers.items():
            for served in provider.models:
                pinned = f"{name}/{served}"
                if pinned not in listed:
                    spec = self.config.models.get(served)
                    spec = spec if spec and name in spec.providers else None
                    listed[pinned] = ListedModel(pinned, name, spec, prices.get(spec.id if spec else pinned))
        return sorted(listed.values(), key=lambda model: model.id)
