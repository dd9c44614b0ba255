"""Fetching a provider's own model list, and reading each wire format's.

- OpenAI-compatible: ``GET {base_url}/models``, ``{"data": [{"id": …}]}``
  (a bare list is read too). OpenRouter-style entries may carry ``name``,
  ``description``, ``context_length``, ``architecture.input_modalities``,
  ``top_provider.max_completion_tokens`` and ``pricing`` (``prompt`` and
  ``completion``, US dollars per token).
- Anthropic: ``GET {base_url}/models?limit=1000`` with ``anthropic-version``,
  paged by ``has_more`` / ``last_id`` (``after_id``).
- Gemini: ``GET {base_url}/models?pageSize=1000``, ``{"models": [{"name":
  "models/…"}]}``, paged by ``nextPageToken``; only models that generate
  content, embed or predict are kept.

The request goes through ``ProviderHTTP``: the provider's own key, sent its
configured way, to its own base URL only, and redacted from every error. A
list is bounded in time (``LIST_TIMEOUT``, or the provider's ``timeout`` if
shorter) and in pages. An answer that is not such a list, or lists nothing,
is an error: the caller keeps the provider's last good list.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from pydantic import ValidationError

from scheduler.catalog import MODALITIES
from scheduler.listings import UpstreamModel
from schema.catalog import ModelKind, ProviderSpec
from schema.errors import GatewayError, GatewayTimeout, UpstreamError
from workers.adapters.anthropic import ANTHROPIC_VERSION
from workers.adapters.http import ProviderHTTP

LIST_TIMEOUT = 10.0  # seconds for a provider's whole list, every page
MAX_PAGES = 20
PAGE_SIZE = 1000  # the most Anthropic and Gemini give in one page
# Model ids become part of URLs (/v1/models/{id}) and of `provider/id`.
MODEL_ID = re.compile(r"[^\s\x00-\x1f\x7f/?#%\"'<>\\][^\s\x00-\x1f\x7f?#%\"'<>\\]{0,255}")
# Providers that do not say a model's kind: guessed from its id.
EMBEDDING_HINTS = ("embed",)
IMAGE_HINTS = ("dall-e", "gpt-image", "imagen", "stable-diffusion", "sdxl", "flux")
# Together-style `type`: what each serves, and the types no endpoint of the gateway serves.
TYPE_KINDS: dict[str, ModelKind] = {"chat": "chat", "language": "chat", "code": "chat", "embedding": "embeddings",
                                    "image": "images"}
UNSERVED_TYPES = frozenset({"rerank", "moderation", "audio", "transcribe", "tts", "video"})
GEMINI_KINDS: dict[str, ModelKind] = {"generateContent": "chat", "embedContent": "embeddings", "predict": "images"}

Page = tuple[list[UpstreamModel], str | None]  # the page's models, the next page's cursor


async def fetch_models(provider: ProviderSpec, *, connect_timeout: float) -> tuple[UpstreamModel, ...]:
    """Every model ``provider`` lists, or a ``GatewayError`` saying why not."""
    if provider.adapter == "mock" or not provider.base_url:
        raise UpstreamError(f"provider {provider.name!r} has no model list to fetch")
    configured = {name.lower() for name in provider.headers}
    extra = {"anthropic-version": ANTHROPIC_VERSION} if (
        provider.adapter == "anthropic" and "anthropic-version" not in configured) else {}
    http = ProviderHTTP(provider, connect_timeout=connect_timeout, headers=extra)
    timeout = min(provider.timeout, LIST_TIMEOUT)
    try:
        async with asyncio.timeout(timeout):
            return await _pages(http, provider)
    except TimeoutError:
        raise GatewayTimeout(f"provider {provider.name!r} did not list its models within {timeout:g} s") from None
    except GatewayError as error:
        error.message = http.redact(error.message)
        raise
    finally:
        await http.aclose()


async def _pages(http: ProviderHTTP, provider: ProviderSpec) -> tuple[UpstreamModel, ...]:
    path, read = FORMATS.get(provider.adapter, FORMATS["openai"])
    models: dict[str, UpstreamModel] = {}
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        try:
            page, cursor = read(await http.get_json(path(cursor)))
        except (TypeError, ValueError, KeyError, ValidationError) as error:
            raise UpstreamError(f"provider {provider.name!r} answered something that is not a model list "
                                f"({type(error).__name__})") from None
        for model in page:
            models.setdefault(model.id, model)
        if cursor is None:
            break
    if not models:
        raise UpstreamError(f"provider {provider.name!r} listed no models")
    return tuple(models.values())


def _query(path: str, params: Mapping[str, str | int | None]) -> str:
    given = {name: value for name, value in params.items() if value is not None}
    return f"{path}?{urlencode(given)}" if given else path


def _object(answer: object) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise TypeError("not a JSON object")
    return answer


def _entries(items: object) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        raise TypeError("no list of models")
    return [item for item in items if isinstance(item, dict)]


def _text(value: object) -> str | None:
    return value.strip()[:2000] or None if isinstance(value, str) else None


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _valid_id(value: object) -> str | None:
    if not isinstance(value, str) or not MODEL_ID.fullmatch(value):
        return None
    return None if {"", ".", ".."} & set(value.split("/")) else value


def _guessed_kind(model_id: str) -> ModelKind:
    lowered = model_id.lower()
    if any(hint in lowered for hint in EMBEDDING_HINTS):
        return "embeddings"
    if any(hint in lowered for hint in IMAGE_HINTS):
        return "images"
    return "chat"


def _usd_per_mtok(value: object) -> Decimal | None:
    """A published price per token (a string or number) as dollars per
    million; None when absent, negative (OpenRouter's "-1": variable) or not a number."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        return None
    if not price.is_finite() or price < 0:
        return None
    return (price * 1_000_000).normalize()


# OpenAI-compatible


def _openai_path(cursor: str | None) -> str:
    return "/models"


def read_openai(answer: object) -> Page:
    items = answer if isinstance(answer, list) else _object(answer).get("data")
    models: list[UpstreamModel] = []
    for item in _entries(items):
        model_id = _valid_id(item.get("id"))
        if model_id is None:
            continue
        kind_given = item.get("type") if isinstance(item.get("type"), str) else None
        if kind_given in UNSERVED_TYPES:
            continue
        kind = TYPE_KINDS.get(kind_given or "") or _guessed_kind(model_id)
        architecture = found if isinstance(found := item.get("architecture"), dict) else {}
        given = architecture.get("input_modalities")
        modalities = tuple(m for m in given if m in MODALITIES) if isinstance(given, list) else ()
        top = found if isinstance(found := item.get("top_provider"), dict) else {}
        pricing = found if isinstance(found := item.get("pricing"), dict) else {}
        input_price, output_price = _usd_per_mtok(pricing.get("prompt")), _usd_per_mtok(pricing.get("completion"))
        models.append(UpstreamModel(
            id=model_id,
            name=_text(item.get("name")) or _text(item.get("display_name")),
            description=_text(item.get("description")),
            created=_count(item.get("created")),
            kind=kind,
            modalities=modalities or ("text",),
            context_length=_count(item.get("context_length")) or _count(top.get("context_length")),
            max_output_tokens=_count(top.get("max_completion_tokens")),
            # Both sides or neither: half a published price is no price.
            input_usd_per_mtok=input_price if output_price is not None else None,
            output_usd_per_mtok=output_price if input_price is not None else None,
        ))
    return models, None


# Anthropic


def _anthropic_path(cursor: str | None) -> str:
    return _query("/models", {"limit": PAGE_SIZE, "after_id": cursor})


def read_anthropic(answer: object) -> Page:
    listing = _object(answer)
    models: list[UpstreamModel] = []
    for item in _entries(listing.get("data")):
        model_id = _valid_id(item.get("id"))
        if model_id is None:
            continue
        models.append(UpstreamModel(
            id=model_id,
            name=_text(item.get("display_name")),
            created=_unix(item.get("created_at")),
            context_length=_count(item.get("max_input_tokens")),
            max_output_tokens=_count(item.get("max_tokens")),
        ))
    last = listing.get("last_id")
    more = listing.get("has_more") is True and isinstance(last, str) and bool(last)
    return models, last if more else None


def _unix(value: object) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


# Gemini


def _gemini_path(cursor: str | None) -> str:
    return _query("/models", {"pageSize": PAGE_SIZE, "pageToken": cursor})


def read_gemini(answer: object) -> Page:
    listing = _object(answer)
    models: list[UpstreamModel] = []
    for item in _entries(listing.get("models", [])):
        name = item.get("name")
        model_id = _valid_id(name.removeprefix("models/")) if isinstance(name, str) else None
        methods = item.get("supportedGenerationMethods")
        kinds = [GEMINI_KINDS[m] for m in methods if m in GEMINI_KINDS] if isinstance(methods, list) else []
        if model_id is None or not kinds:
            continue
        models.append(UpstreamModel(
            id=model_id,
            name=_text(item.get("displayName")),
            description=_text(item.get("description")),
            kind=kinds[0],
            context_length=_count(item.get("inputTokenLimit")),
            max_output_tokens=_count(item.get("outputTokenLimit")),
        ))
    token = listing.get("nextPageToken")
    return models, token if isinstance(token, str) and token else None


FORMATS: dict[str, tuple[Callable[[str | None], str], Callable[[object], Page]]] = {
    "openai": (_openai_path, read_openai),
    "anthropic": (_anthropic_path, read_anthropic),
    "gemini": (_gemini_path, read_gemini),
}
