"""One module per wire protocol; an OpenAI-compatible provider is a catalog
entry, not a module."""

from __future__ import annotations

from schema.catalog import ProviderSpec
from schema.settings import Settings
from workers.adapters.anthropic import AnthropicAdapter
from workers.adapters.base import ProviderAdapter
from workers.adapters.gemini import GeminiAdapter
from workers.adapters.mock import MockAdapter
from workers.adapters.openai import OpenAIAdapter


def build_adapter(provider: ProviderSpec, settings: Settings) -> ProviderAdapter:
    if provider.adapter == "mock":
        return MockAdapter()
    if provider.adapter == "anthropic":
        return AnthropicAdapter(provider, connect_timeout=settings.upstream_connect_timeout)
    if provider.adapter == "gemini":
        return GeminiAdapter(provider, connect_timeout=settings.upstream_connect_timeout)
    return OpenAIAdapter(provider, connect_timeout=settings.upstream_connect_timeout)


__all__ = ["ProviderAdapter", "build_adapter"]
