"""The providers-and-models configuration format (TOML), validated.

A provider is data: which adapter speaks its protocol, where it lives, how it
authenticates, and which models it serves. A model entry gives the ordered
candidate providers and, optionally, prices. The built-in ``mock`` provider is
always present so that a fresh install works offline.

``load_config`` starts from the provider catalog shipped in the package
(``schema/providers.toml``; how it combines with the operator's file:
``schema/shipped.py``), so a provider is enabled by setting its key variable.
``parse_config`` takes the shipped catalog only when given one, so a test
decides whether its config includes it.

Every routable model's price is resolved once, here, at load: for each of
input and output, the entry's explicit price in credits, else the price
list's (genai-prices) price in US dollars converted at ``credits_per_usd``
and marked up by ``markup_percent``; an image model's per-image price is only
ever explicit (the list has none). A model with none of these is refused,
unless ``[pricing] unpriced = "free"``. The result is ``GatewayConfig.prices``.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Callable, Mapping
from decimal import Decimal, DecimalException
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from schema.jobs import Price
from schema.plans import PlanSpec, RateLimitsSpec, check_default_plan, with_default_plan
from schema.prices import GenaiPrices, ListPrice, PriceList, sell_price
from schema.secrets import SecretsFileError, with_secrets
from schema.shipped import Combined, Document, combine, shipped_catalog

if TYPE_CHECKING:  # the translations load only where a request is translated
    from schema.translate import Dialect

log = logging.getLogger("gatewayz.config")

ModelKind = Literal["chat", "embeddings", "images"]
Modality = Literal["text", "image", "audio", "video", "file"]
AdapterKind = Literal["openai", "anthropic", "gemini", "mock"]
# How the provider's key is sent: ``bearer`` (Authorization), ``x-api-key``
# (Anthropic), ``x-goog-api-key`` (Gemini), ``x-portkey-api-key`` (Portkey),
# ``key`` (``Authorization: Key …``, fal), or ``none``.
AuthStyle = Literal["bearer", "x-api-key", "x-goog-api-key", "x-portkey-api-key", "key", "none"]
DEFAULT_AUTH: dict[str, AuthStyle] = {"openai": "bearer", "anthropic": "x-api-key", "gemini": "x-goog-api-key",
                                      "mock": "none"}
# The wire dialect each adapter speaks (schema.translate.Dialect).
ADAPTER_DIALECT: dict[AdapterKind, Dialect] = {"openai": "openai", "anthropic": "anthropic", "gemini": "gemini",
                                                "mock": "openai"}
# The endpoints each adapter serves: the ingress refuses a request that no
# candidate's adapter can serve before it holds any credit.
ADAPTER_KINDS: dict[AdapterKind, frozenset[ModelKind]] = {
    "openai": frozenset({"chat", "embeddings", "images"}),
    "anthropic": frozenset({"chat"}),
    "gemini": frozenset({"chat"}),
    "mock": frozenset({"chat", "embeddings", "images"}),
}


class ProviderSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A provider's name is part of queue names and routing keys.
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    adapter: AdapterKind = "openai"
    base_url: str | None = None
    api_key_env: str | None = None
    auth: AuthStyle | None = Field(None, description="how the key is sent; the adapter's usual way when unset")
    api_key: SecretStr | None = Field(None, exclude=True, repr=False)
    headers: dict[str, str] = {}
    models: list[str] = []
    timeout: float = Field(600.0, gt=0, description="total seconds for one upstream call")
    # Per-phase timeouts (workers.pool): a stream whose first event is late fails over to the next candidate.
    connect_timeout: float | None = Field(None, gt=0,
                                          description="seconds to connect (default GATEWAYZ_UPSTREAM_CONNECT_TIMEOUT)")
    first_token_timeout: float = Field(120.0, gt=0, description="seconds a stream may wait for its first event")
    idle_timeout: float = Field(60.0, gt=0, description="seconds a stream may go silent between two events")
    max_connections: int = Field(10_000, gt=0, le=1_000_000,
                                 description="connections a worker process opens to the provider at once "
                                             "(each running job holds one)")
    price_provider: str | None = Field(None, description="the price list's provider id for this provider's models")
    output_limit_field: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens", description="where an OpenAI-compatible provider reads a request's output limit "
                                  "(OpenAI's reasoning models take only max_completion_tokens)")
    verified: bool = Field(True, description="false: the base URL or auth style is not confirmed by the provider")
    notes: str | None = None

    @model_validator(mode="after")
    def _needs_url(self) -> ProviderSpec:
        if self.adapter != "mock" and not self.base_url:
            raise ValueError(f"provider {self.name!r}: base_url is required for adapter {self.adapter!r}")
        if self.base_url:
            self.base_url = self.base_url.rstrip("/")
        if self.auth is None:
            self.auth = DEFAULT_AUTH[self.adapter]
        return self

    @property
    def dialect(self) -> Dialect:
        return ADAPTER_DIALECT[self.adapter]

    def serves(self, kind: ModelKind) -> bool:
        return kind in ADAPTER_KINDS[self.adapter]


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    kind: ModelKind = Field("chat", description="the endpoint it serves: chat, embeddings or images")
    modalities: list[Modality] = Field(["text"], description="what it takes as input")
    providers: list[str] = Field(min_length=1)
    upstream_ids: dict[str, str] = Field({}, description="provider -> the model id that provider knows it by")
    input_price_per_mtok: Decimal | None = Field(None, description="credits; overrides the price list")
    output_price_per_mtok: Decimal | None = Field(None, description="credits; overrides the price list")
    price_per_image: Decimal | None = Field(None, description="credits per generated image (images models)")
    price_source: str | None = Field(None, description="the price list's entry, provider:model (openai:gpt-4o-mini)")
    price_note: str | None = Field(None, description="where an explicit price was published")
    markup_percent: Decimal | None = Field(None, ge=0, description="overrides [pricing] markup_percent")
    context_length: int | None = Field(None, gt=0)
    max_output_tokens: int | None = Field(None, gt=0)

    @field_validator("input_price_per_mtok", "output_price_per_mtok", "price_per_image")
    @classmethod
    def _not_negative(cls, price: Decimal | None) -> Decimal | None:
        if price is not None and (price < 0 or not price.is_finite()):
            raise ValueError("prices are finite and not negative")
        return price

    @model_validator(mode="after")
    def _list_settings_apply(self) -> ModelSpec:
        if self.price_per_image is not None and self.kind != "images":
            raise ValueError(f"model {self.id!r}: price_per_image applies to images models, not to kind {self.kind!r}")
        if self.price_source is not None and ":" not in self.price_source.strip(":"):
            raise ValueError(f"model {self.id!r}: price_source is provider:model, such as openai:gpt-4o-mini")
        if self.input_price_per_mtok is not None and self.output_price_per_mtok is not None:
            ignored = [key for key in ("price_source", "markup_percent") if getattr(self, key) is not None]
            if ignored:
                raise ValueError(f"model {self.id!r}: both prices are explicit, "
                                 f"so {' and '.join(ignored)} would have no effect")
        return self

    def upstream_id(self, provider: str) -> str:
        """The model id ``provider`` knows this model by: ``mock/echo`` is ``echo`` to ``mock``."""
        if provider in self.upstream_ids:
            return self.upstream_ids[provider]
        prefix = f"{provider}/"
        return self.id[len(prefix):] if self.id.startswith(prefix) else self.id


class PricingSpec(BaseModel):
    """``[pricing]``: the markup on list prices, and what a model without a price does."""

    model_config = ConfigDict(extra="forbid")

    markup_percent: Decimal = Field(Decimal(0), ge=0, description="added to every list price")
    batch_discount_percent: Decimal = Field(
        Decimal(50), ge=0, le=100, description="taken off every price for the batch API's lines")
    unpriced: Literal["error", "free"] = Field(
        "error", description="a model without a price: refuse the config, or serve it free (with a warning)")


class SellPrice(BaseModel):
    """What the gateway charges for a model, and where each price came from:
    ``config``, ``genai-prices:openai:gpt-4o-mini``, both joined by ``+``, or ``unpriced``."""

    model_config = ConfigDict(frozen=True)

    price: Price
    source: str


class DisabledProvider(BaseModel):
    """A known provider that is off, as configured (its base_url may still
    hold placeholders; it has no key), and what would turn it on."""

    model_config = ConfigDict(frozen=True)

    spec: ProviderSpec
    reason: str


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Enabled providers only: every one is routable and gets a worker pool.
    providers: dict[str, ProviderSpec]
    # Routable models only, each with its enabled candidates.
    models: dict[str, ModelSpec] = {}
    pricing: PricingSpec = PricingSpec()
    plans: dict[str, PlanSpec] = Field(default_factory=lambda: with_default_plan({}))
    rate_limits: RateLimitsSpec = RateLimitsSpec()
    # Resolved by parse_config, not read from the file: each [models] id and
    # each provider/model a provider lists outside any entry -> its price.
    prices: dict[str, SellPrice] = {}
    disabled_providers: dict[str, DisabledProvider] = {}

    @model_validator(mode="after")
    def _known_providers(self) -> GatewayConfig:
        for model in self.models.values():
            unknown = [p for p in model.providers if p not in self.providers]
            if unknown:
                raise ValueError(f"model {model.id!r} names unknown providers {unknown}")
        return self

    @model_validator(mode="after")
    def _known_default_plan(self) -> GatewayConfig:
        self.plans = with_default_plan(self.plans)
        check_default_plan(self.plans, self.rate_limits)
        return self


MOCK_PROVIDER = {"adapter": "mock", "models": ["echo", "embed", "image"]}
MOCK_MODEL = {
    "providers": ["mock"],
    "input_price_per_mtok": Decimal("1.00"),
    "output_price_per_mtok": Decimal("2.00"),
    "context_length": 32768,
    "max_output_tokens": 4096,
}
MOCK_EMBEDDINGS_MODEL = {"kind": "embeddings", "providers": ["mock"], "input_price_per_mtok": Decimal("0.10")}
MOCK_IMAGES_MODEL = {"kind": "images", "providers": ["mock"], "price_per_image": Decimal("0.01")}
MOCK_MODELS = {"mock/echo": MOCK_MODEL, "mock/embed": MOCK_EMBEDDINGS_MODEL, "mock/image": MOCK_IMAGES_MODEL}


class ConfigError(ValueError):
    """The configuration file cannot be used; the message says why."""


SECTIONS = ("providers", "models", "pricing", "plans", "rate_limits")


def _table(document: Mapping[str, object], section: str) -> Document:
    """A section of the document, a table (absent or empty: an empty one)."""
    table = document.get(section) or {}
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] is a table, not {type(table).__name__}")
    return dict(table)


def parse_config(
    document: Mapping[str, object],
    environ: Mapping[str, str],
    *,
    credits_per_usd: Decimal = Decimal(1),
    price_list: PriceList | None = None,
    shipped: Mapping[str, object] | None = None,
) -> GatewayConfig:
    """Validate a parsed TOML document, add the built-in mock provider,
    resolve provider keys from ``environ`` and every model's price.

    ``shipped`` is a provider catalog to start from (``shipped_catalog()``,
    as ``load_config`` does; a test may pass its own): its providers are
    enabled by their key variables in ``environ`` or by the document, and its
    models that end up without a price are left out rather than refusing the
    config. ``credits_per_usd`` is the gateway's one exchange rate
    (``GATEWAYZ_CREDITS_PER_USD``, which top-ups use too); ``price_list``
    defaults to the installed genai-prices table as of now."""
    unknown = sorted(set(document) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown sections {unknown}: the config has {', '.join(SECTIONS)}")
    providers = _table(document, "providers")
    models = _table(document, "models")
    plans = _table(document, "plans")
    providers.setdefault("mock", MOCK_PROVIDER)
    for model_id, mock_model in MOCK_MODELS.items():
        models.setdefault(model_id, mock_model)
    try:
        combined = combine(shipped or {}, providers, models, environ)
        config = GatewayConfig.model_validate({
            "providers": {name: {**spec, "name": name} for name, spec in combined.providers.items()},
            "models": {model_id: {**spec, "id": model_id} for model_id, spec in combined.models.items()},
            "pricing": _table(document, "pricing"),
            "disabled_providers": {name: {"spec": {**spec, "name": name}, "reason": reason}
                                   for name, (spec, reason) in combined.disabled.items()},
            "plans": {name: {**spec, "name": name} for name, spec in plans.items()},
            "rate_limits": _table(document, "rate_limits"),
        })
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from error
    for provider in config.providers.values():
        # Each provider's own variable only: a key is never given to another provider.
        if provider.api_key_env and environ.get(provider.api_key_env):
            provider.api_key = SecretStr(environ[provider.api_key_env])
    config.prices = _resolve_prices(config, price_list or GenaiPrices(), credits_per_usd, combined)
    return config


def load_config(path: Path | None, environ: Mapping[str, str], *, credits_per_usd: Decimal,
                secrets_file: Path | None = None, shipped: bool = True) -> GatewayConfig:
    """The gateway's config: the shipped catalog (unless ``shipped`` is
    false), the operator's file at ``path``, and provider keys and
    placeholders from ``environ`` over ``secrets_file``."""
    try:
        variables = with_secrets(environ, secrets_file)
    except SecretsFileError as error:
        raise ConfigError(str(error)) from None
    catalog = shipped_catalog() if shipped else None
    if path is None:
        return parse_config({}, variables, credits_per_usd=credits_per_usd, shipped=catalog)
    try:
        document = tomllib.loads(path.read_text(), parse_float=Decimal)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from error
    return parse_config(document, variables, credits_per_usd=credits_per_usd, shipped=catalog)


# Prices, resolved once at load


def _resolve_prices(config: GatewayConfig, price_list: PriceList, credits_per_usd: Decimal,
                    combined: Combined) -> dict[str, SellPrice]:
    """Every routable model's price. A shipped model or price_provider the
    list cannot price is left out with a warning (a price-list upgrade must
    not stop a start); the operator's own are errors."""
    if not credits_per_usd.is_finite() or credits_per_usd <= 0:
        raise ConfigError(f"credits_per_usd must be a positive number, not {credits_per_usd}")
    for provider in config.providers.values():
        if provider.price_provider is not None and not price_list.knows(provider.price_provider):
            message = (f"provider {provider.name!r}: price_provider {provider.price_provider!r} "
                       f"is not a provider of {price_list.name}")
            if provider.name not in combined.shipped_price_providers:
                raise ConfigError(message)
            log.warning("%s; its models are priced by their entries only", message)
            provider.price_provider = None
    resolved: dict[str, SellPrice | None] = {}
    dropped: set[str] = set()

    def settle(model: str, optional: bool, price: Callable[[], SellPrice | None]) -> None:
        try:
            found = price()
        except ConfigError as error:
            if not optional:
                raise
            log.warning("shipped model %s is not routable: %s", model, error)
            dropped.add(model)
            return
        if found is None and optional:
            log.warning("shipped model %s is not routable: %s has no price for it", model, price_list.name)
            dropped.add(model)
            return
        resolved[model] = found

    def entry_price(spec: ModelSpec) -> SellPrice | None:
        listed = _entry_list_price(spec, config, price_list)
        return _sell_price(spec.id, spec, listed, config.pricing, credits_per_usd, price_list.name)

    def pinned_price(provider: ProviderSpec, served: str) -> SellPrice | None:
        listed = _provider_list_price(provider, served, price_list)
        return _sell_price(f"{provider.name}/{served}", None, listed, config.pricing, credits_per_usd,
                           price_list.name)

    for spec in config.models.values():
        settle(spec.id, spec.id in combined.shipped_models, partial(entry_price, spec))
    for provider in config.providers.values():
        for served in provider.models:
            pinned = f"{provider.name}/{served}"
            entry = config.models.get(served)
            if pinned in config.models or (entry is not None and provider.name in entry.providers):
                continue  # routed by that entry, at its price
            settle(pinned, pinned in combined.shipped_pinned, partial(pinned_price, provider, served))
    for model in dropped:
        config.models.pop(model, None)
    for provider in config.providers.values():
        provider.models = [served for served in provider.models
                           if served not in dropped and f"{provider.name}/{served}" not in dropped]

    from_list = [model for model, price in resolved.items() if price is not None and price.source != "config"]
    if from_list:
        log.info("%d models priced from %s", len(from_list), price_list)
    unpriced = sorted(model for model, price in resolved.items() if price is None)
    if unpriced and config.pricing.unpriced == "error":
        raise ConfigError(
            f"no price for {', '.join(unpriced)}: give each a [models] entry with input_price_per_mtok and "
            f"output_price_per_mtok (0 for free), a price_source, or a price_provider on its provider; "
            f'or set [pricing] unpriced = "free"'
        )
    for model in unpriced:
        log.warning("model %s has no price and is served FREE ([pricing] unpriced = \"free\")", model)
    return {model: price or SellPrice(price=Price(), source="unpriced") for model, price in resolved.items()}


def _entry_list_price(spec: ModelSpec, config: GatewayConfig, price_list: PriceList) -> ListPrice | None:
    """The entry's ``price_source``, else the first candidate provider the list prices it under."""
    if spec.input_price_per_mtok is not None and spec.output_price_per_mtok is not None:
        return None
    if spec.price_source is not None:
        provider, _, model = spec.price_source.partition(":")
        if not price_list.knows(provider):
            raise ConfigError(f"model {spec.id!r}: price_source {spec.price_source!r}: "
                              f"{price_list.name} has no provider {provider!r}")
        listed = price_list.lookup(provider, model)
        if listed is None:
            raise ConfigError(f"model {spec.id!r}: price_source {spec.price_source!r}: "
                              f"{price_list.name} has no token price for {model!r} under {provider!r}")
        return listed
    for name in spec.providers:
        listed = _provider_list_price(config.providers[name], spec.upstream_id(name), price_list)
        if listed is not None:
            return listed
    return None


def _provider_list_price(provider: ProviderSpec, model: str, price_list: PriceList) -> ListPrice | None:
    """The list's price for ``model`` under the provider's ``price_provider``,
    or its own name when that is one of the list's providers."""
    if provider.adapter == "mock":
        return None
    list_provider = provider.price_provider or provider.name
    return price_list.lookup(list_provider, model) if price_list.knows(list_provider) else None


def _sell_price(
    model: str, spec: ModelSpec | None, listed: ListPrice | None, pricing: PricingSpec, credits_per_usd: Decimal,
    list_name: str,
) -> SellPrice | None:
    """Per side: the explicit price, else the list price converted and marked
    up, else 0 when another price is explicit (a price left out is free). The
    per-image price is explicit or 0."""
    explicit = (spec.input_price_per_mtok, spec.output_price_per_mtok) if spec else (None, None)
    per_image = spec.price_per_image if spec else None
    if listed is None:
        if spec is not None and spec.markup_percent is not None:
            raise ConfigError(f"model {model!r}: markup_percent applies to list prices, and it has none")
        if explicit == (None, None) and per_image is None:
            return None
        input_price, output_price = (Decimal(0) if side is None else side for side in explicit)
        price = Price(input_per_mtok=input_price, output_per_mtok=output_price, per_image=per_image or Decimal(0))
        return SellPrice(price=price, source="config")
    markup = spec.markup_percent if spec is not None and spec.markup_percent is not None else pricing.markup_percent
    list_source = f"{list_name}:{listed.provider}:{listed.model}"
    sides: list[Decimal] = []
    for given, usd in zip(explicit, (listed.input_usd_per_mtok, listed.output_usd_per_mtok), strict=True):
        try:
            sides.append(given if given is not None else sell_price(usd, credits_per_usd, markup))
        except DecimalException as error:
            raise ConfigError(f"model {model!r}: {usd} USD at {credits_per_usd} credits plus {markup}% "
                              f"is not an exact price") from error
    for note in listed.notes:
        log.warning("model %s priced from %s: %s", model, list_source, note)
    source = list_source if explicit == (None, None) and per_image is None else f"config+{list_source}"
    price = Price(input_per_mtok=sides[0], output_per_mtok=sides[1], per_image=per_image or Decimal(0))
    return SellPrice(price=price, source=source)
