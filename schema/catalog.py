"""The providers-and-models configuration format (TOML), validated.

A provider is data: which adapter speaks its protocol, where it lives, how it
authenticates, and which models it serves. A model entry gives the ordered
candidate providers and the prices in credits per million tokens. The built-in
``mock`` provider is always present so that a fresh install works offline.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

AdapterKind = Literal["openai", "mock"]


class ProviderSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A provider's name is part of queue names and routing keys.
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    adapter: AdapterKind = "openai"
    base_url: str | None = None
    api_key_env: str | None = None
    api_key: SecretStr | None = Field(None, exclude=True, repr=False)
    headers: dict[str, str] = {}
    models: list[str] = []
    timeout: float = Field(600.0, gt=0, description="total seconds for one upstream call")

    @model_validator(mode="after")
    def _needs_url(self) -> ProviderSpec:
        if self.adapter != "mock" and not self.base_url:
            raise ValueError(f"provider {self.name!r}: base_url is required for adapter {self.adapter!r}")
        if self.base_url:
            self.base_url = self.base_url.rstrip("/")
        return self


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    providers: list[str] = Field(min_length=1)
    upstream_ids: dict[str, str] = Field({}, description="provider -> the model id that provider knows it by")
    input_price_per_mtok: Decimal = Decimal(0)
    output_price_per_mtok: Decimal = Decimal(0)
    context_length: int | None = Field(None, gt=0)
    max_output_tokens: int | None = Field(None, gt=0)

    @field_validator("input_price_per_mtok", "output_price_per_mtok")
    @classmethod
    def _not_negative(cls, price: Decimal) -> Decimal:
        if price < 0 or not price.is_finite():
            raise ValueError("prices are finite and not negative")
        return price


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: dict[str, ProviderSpec]
    models: dict[str, ModelSpec] = {}

    @model_validator(mode="after")
    def _known_providers(self) -> GatewayConfig:
        for model in self.models.values():
            unknown = [p for p in model.providers if p not in self.providers]
            if unknown:
                raise ValueError(f"model {model.id!r} names unknown providers {unknown}")
        return self


MOCK_PROVIDER = {"adapter": "mock", "models": ["echo"]}
MOCK_MODEL = {
    "providers": ["mock"],
    "input_price_per_mtok": Decimal("1.00"),
    "output_price_per_mtok": Decimal("2.00"),
    "context_length": 32768,
    "max_output_tokens": 4096,
}


class ConfigError(ValueError):
    """The configuration file cannot be used; the message says why."""


def parse_config(document: Mapping[str, object], environ: Mapping[str, str]) -> GatewayConfig:
    """Validate a parsed TOML document, add the built-in mock provider and
    resolve provider keys from ``environ``."""
    providers = dict(document.get("providers", {}) or {})  # type: ignore[arg-type]
    models = dict(document.get("models", {}) or {})  # type: ignore[arg-type]
    providers.setdefault("mock", MOCK_PROVIDER)
    models.setdefault("mock/echo", MOCK_MODEL)
    try:
        config = GatewayConfig(
            providers={name: {**spec, "name": name} for name, spec in providers.items()},
            models={model_id: {**spec, "id": model_id} for model_id, spec in models.items()},
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from error
    for provider in config.providers.values():
        if provider.api_key_env and environ.get(provider.api_key_env):
            provider.api_key = SecretStr(environ[provider.api_key_env])
    return config


def load_config(path: Path | None, environ: Mapping[str, str]) -> GatewayConfig:
    if path is None:
        return parse_config({}, environ)
    try:
        document = tomllib.loads(path.read_text(), parse_float=Decimal)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from error
    return parse_config(document, environ)
