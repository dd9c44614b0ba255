"""Embeddings and images go only to providers whose adapter has the
endpoint: a candidate without it is skipped, and a model none of whose
candidates has it is refused with a 400 before any credit is held, in both
run modes."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest

from loadtests.fake_upstream import FakeUpstream
from schema.catalog import parse_config
from tests.conftest import MODES, UPSTREAM_KEY
from tests.support.gateway import Gateway, gateway_in_mode


@pytest.fixture(scope="module", params=MODES)
def gateway(request: pytest.FixtureRequest, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[Gateway]:
    url = f"{upstream.url}/v1"  # type: ignore[attr-defined]
    document = {
        "providers": {
            # Anthropic's and Gemini's protocols have no such endpoints (the URL is never called).
            "claude": {"adapter": "anthropic", "base_url": url, "api_key_env": "FAKE_KEY"},
            "gemini": {"adapter": "gemini", "base_url": url, "api_key_env": "FAKE_KEY"},
            "fake": {"adapter": "openai", "base_url": url, "api_key_env": "FAKE_KEY"},
        },
        "models": {
            "embed-anywhere": {"kind": "embeddings", "providers": ["claude", "gemini", "fake"],
                               "upstream_ids": {"fake": "fake-embed"}, "input_price_per_mtok": Decimal("2")},
            "embed-nowhere": {"kind": "embeddings", "providers": ["claude", "gemini"],
                              "input_price_per_mtok": Decimal("2")},
            "paint-nowhere": {"kind": "images", "providers": ["claude"], "price_per_image": Decimal("0.04")},
        },
        # so that a pinned id without an entry ("gemini/…") routes, its kind unknown
        "pricing": {"unpriced": "free"},
    }
    config = parse_config(document, {"FAKE_KEY": UPSTREAM_KEY})
    with gateway_in_mode(request.param, config, tmp_path_factory.mktemp(f"media-{request.param}")) as running:
        yield running


def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=30)


def test_candidates_without_the_endpoint_are_skipped(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    response = client(gateway, key).embeddings.with_raw_response.create(model="embed-anywhere", input="one two")
    assert response.headers["x-gatewayz-provider"] == "fake"
    assert response.parse().usage.prompt_tokens == 2
    assert gateway.wait_for_balance(key, 1_000_000 - 4) == 1_000_000 - 4


def test_a_model_no_candidate_can_serve_is_refused_before_any_hold(gateway: Gateway, upstream: FakeUpstream) -> None:
    key = gateway.create_key("1")
    seen = len(upstream.requests)
    with pytest.raises(openai.BadRequestError) as raised:
        client(gateway, key).embeddings.create(model="embed-nowhere", input="one two")
    assert raised.value.body["param"] == "model"
    assert "provider 'claude' (anthropic adapter) cannot serve embeddings requests" in raised.value.message
    with pytest.raises(openai.BadRequestError) as raised:
        client(gateway, key).images.generate(model="paint-nowhere", prompt="a cat")
    assert "cannot serve images requests" in raised.value.message
    with pytest.raises(openai.BadRequestError) as raised:
        client(gateway, key).embeddings.create(model="gemini/some-embedding-model", input="one two")
    assert "provider 'gemini' (gemini adapter) cannot serve embeddings requests" in raised.value.message
    assert len(upstream.requests) == seen
    assert (gateway.balance(key), gateway.held(key)) == (1_000_000, 0)
