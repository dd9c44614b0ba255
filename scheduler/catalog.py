"""The model catalog: which models are routable and through which providers.

``route("acme/fake-small")`` pins provider ``acme``; ``route("fake-small")``
returns the model's candidate providers in the configured order.
"""

from __future__ import annotations

from dataclasses import dataclass

from schema.catalog import GatewayConfig, ModelSpec, ProviderSpec
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
    """A routable model id, the provider that serves it first, and its entry."""

    id: str
    provider: str
    spec: ModelSpec | None


class Catalog:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.providers: dict[str, ProviderSpec] = config.providers

    def provider(self, name: str) -> ProviderSpec:
        return self.providers[name]

    def route(self, model: object) -> ModelRoute:
        if not isinstance(model, str) or not model:
            raise InvalidRequest("`model` is required and must be a string", param="model")
        spec = self.config.models.get(model)
        if spec is not None:
            routes = [Route(provider=p, upstream_model=spec.upstream_ids.get(p, _bare(model, p))) for p in spec.providers]
            return ModelRoute(model, routes, _price(spec), spec)
        provider, _, upstream_model = model.partition("/")
        if upstream_model and provider in self.providers:
            spec = self.config.models.get(upstream_model)
            if spec is not None and provider not in spec.providers:
                spec = None
            served = self.providers[provider].models
            if spec is None and served and upstream_model not in served:
                raise ModelNotFound(f"provider {provider!r} does not serve model {upstream_model!r}", param="model")
            upstream = spec.upstream_ids.get(provider, upstream_model) if spec else upstream_model
            return ModelRoute(model, [Route(provider=provider, upstream_model=upstream)], _price(spec), spec)
        for name, provider_spec in self.providers.items():
            if model in provider_spec.models:
                return ModelRoute(model, [Route(provider=name, upstream_model=model)], Price(), None)
        raise ModelNotFound(f"The model `{model}` does not exist or is not routable", param="model")

    def models(self) -> list[ListedModel]:
        """Every routable model id, sorted, with the provider that serves it first."""
        listed = {model_id: ListedModel(model_id, spec.providers[0], spec) for model_id, spec in self.config.models.items()}
        for name, provider in self.providers.items():
            for served in provider.models:
                pinned = f"{name}/{served}"
                if pinned not in listed:
                    spec = self.config.models.get(served)
                    listed[pinned] = ListedModel(pinned, name, spec if spec and name in spec.providers else None)
        return sorted(listed.values(), key=lambda model: model.id)

    def find(self, model_id: str) -> ListedModel | None:
        return next((model for model in self.models() if model.id == model_id), None)


def _bare(model_id: str, provider: str) -> str:
    """``mock/echo`` is known to provider ``mock`` as ``echo``."""
    prefix = f"{provider}/"
    return model_id[len(prefix):] if model_id.startswith(prefix) else model_id


def _price(spec: ModelSpec | None) -> Price:
    if spec is None:
        return Price()
    return Price(input_per_mtok=spec.input_price_per_mtok, output_per_mtok=spec.output_price_per_mtok)
