"""Reading each wire format's model list: what is kept, what a provider said
about each model, and what is not a model list at all. (Fetching them from
fake providers: tests/contract/test_catalog_refresh.py.)"""

from __future__ import annotations

from decimal import Decimal

import pytest

from ingress.model_lists import read_anthropic, read_gemini, read_openai
from scheduler.listings import UpstreamModel


def test_an_openai_list() -> None:
    models, cursor = read_openai({"object": "list", "data": [
        {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"},
        {"id": "text-embedding-3-small", "object": "model"},
        {"id": "dall-e-3", "object": "model"},
    ]})
    assert cursor is None
    assert models == [UpstreamModel(id="gpt-4o", created=1715367049),
                      UpstreamModel(id="text-embedding-3-small", kind="embeddings"),
                      UpstreamModel(id="dall-e-3", kind="images")]


def test_an_openrouter_list_carries_prices_per_token() -> None:
    [model] = read_openai({"data": [{
        "id": "qwen/qwen3-coder:free", "name": "Qwen3 Coder", "description": "  Code.  ", "context_length": 262_144,
        "architecture": {"input_modalities": ["text", "image", "telepathy"]},
        "top_provider": {"max_completion_tokens": 65_536},
        "pricing": {"prompt": "0.0000002", "completion": 0.0000008, "image": "0.001"},
    }]})[0]
    assert (model.name, model.description, model.context_length, model.max_output_tokens) == (
        "Qwen3 Coder", "Code.", 262_144, 65_536)
    assert model.modalities == ("text", "image")
    assert (model.input_usd_per_mtok, model.output_usd_per_mtok) == (Decimal("0.2"), Decimal("0.8"))


@pytest.mark.parametrize("pricing", [
    {"prompt": "-1", "completion": "-1"},  # OpenRouter's "variable" price
    {"prompt": "0.000001"},  # half a price is no price
    {"prompt": "cheap", "completion": "0"},
    {"prompt": True, "completion": "0"},
    {"prompt": "NaN", "completion": "0"},
    "free",
])
def test_a_price_that_is_not_one_is_none(pricing: object) -> None:
    [model] = read_openai({"data": [{"id": "m", "pricing": pricing}]})[0]
    assert (model.input_usd_per_mtok, model.output_usd_per_mtok) == (None, None)


def test_a_together_style_bare_list_with_types() -> None:
    models, _ = read_openai([
        {"id": "meta-llama/Llama-3-70b-chat-hf", "type": "chat", "display_name": "Llama 3 70B", "context_length": 8192},
        {"id": "BAAI/bge-large-en-v1.5", "type": "embedding"},
        {"id": "Salesforce/Llama-Rank-V1", "type": "rerank"},
        {"id": "stabilityai/stable-diffusion-xl-base-1.0", "type": "image"},
        {"id": "m", "type": "model"},
    ])
    assert [(model.id, model.kind) for model in models] == [
        ("meta-llama/Llama-3-70b-chat-hf", "chat"), ("BAAI/bge-large-en-v1.5", "embeddings"),
        ("stabilityai/stable-diffusion-xl-base-1.0", "images"), ("m", "chat")]
    assert (models[0].name, models[0].context_length) == ("Llama 3 70B", 8192)


@pytest.mark.parametrize("model_id", [
    "", " ", "has space", "/leading", "trailing/", "a//b", "a/../b", "..", "q?x", "frag#x", "pct%2F", "new\nline",
    "x" * 257, 42, None, ["a"],
])
def test_ids_that_cannot_be_model_ids_are_left_out(model_id: object) -> None:
    assert read_openai({"data": [{"id": model_id}, {"id": "fine"}]})[0] == [UpstreamModel(id="fine")]


@pytest.mark.parametrize("answer", [{"data": "nope"}, {"models": []}, "text", 3, None])
def test_what_is_not_an_openai_list(answer: object) -> None:
    with pytest.raises(TypeError):
        read_openai(answer)


def test_an_anthropic_list_pages_by_last_id() -> None:
    page = {"data": [{"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5",
                      "created_at": "2025-09-29T00:00:00Z", "max_input_tokens": 200_000, "max_tokens": 64_000}],
            "has_more": True, "first_id": "claude-sonnet-4-5", "last_id": "claude-sonnet-4-5"}
    models, cursor = read_anthropic(page)
    assert cursor == "claude-sonnet-4-5"
    assert models == [UpstreamModel(id="claude-sonnet-4-5", name="Claude Sonnet 4.5", created=1759104000,
                                    context_length=200_000, max_output_tokens=64_000)]
    assert read_anthropic({**page, "has_more": False})[1] is None
    with pytest.raises(TypeError):
        read_anthropic({"type": "error", "error": {"type": "api_error"}})


def test_a_gemini_list_keeps_what_generates_embeds_or_predicts() -> None:
    models, cursor = read_gemini({"models": [
        {"name": "models/gemini-2.5-flash", "displayName": "Gemini 2.5 Flash", "description": "Fast.",
         "inputTokenLimit": 1_048_576, "outputTokenLimit": 65_536,
         "supportedGenerationMethods": ["generateContent", "countTokens", "createCachedContent"]},
        {"name": "models/gemini-embedding-001", "supportedGenerationMethods": ["embedContent", "countTextTokens"]},
        {"name": "models/imagen-4.0-generate-001", "supportedGenerationMethods": ["predict"]},
        {"name": "models/aqa", "supportedGenerationMethods": ["generateAnswer"]},
        {"name": "models/no-methods"},
    ], "nextPageToken": "Ch9tb2RlbHM"})
    assert cursor == "Ch9tb2RlbHM"
    assert [(model.id, model.kind) for model in models] == [
        ("gemini-2.5-flash", "chat"), ("gemini-embedding-001", "embeddings"), ("imagen-4.0-generate-001", "images")]
    assert (models[0].name, models[0].context_length, models[0].max_output_tokens) == (
        "Gemini 2.5 Flash", 1_048_576, 65_536)
    assert read_gemini({})[0] == [] and read_gemini({"models": []})[1] is None
