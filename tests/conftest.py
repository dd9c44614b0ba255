"""Fixtures: fake upstreams on loopback (OpenAI-compatible, Anthropic, Gemini), and
the gateway in front of them in each run mode (``embedded``, ``distributed``)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from loadtests.fake_upstream import FakeUpstream
from schema.catalog import GatewayConfig, parse_config
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_gemini import FakeGemini
from tests.support.gateway import ADMIN_TOKEN, STRIPE_WEBHOOK_SECRET, Gateway, gateway_in_mode
from tests.support.servers import serving

UPSTREAM_KEY = "sk-upstream-secret-0123456789"
ANTHROPIC_KEY = "sk-ant-upstream-secret-0123456789"
GEMINI_KEY = "AIza-gemini-upstream-secret-0123456789"
MODES = ["embedded", "distributed"]


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    with serving(FakeUpstream(api_key=UPSTREAM_KEY), "fake upstream") as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with serving(FakeAnthropic(api_key=ANTHROPIC_KEY), "fake anthropic") as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_gemini() -> Iterator[FakeGemini]:
    with serving(FakeGemini(api_key=GEMINI_KEY), "fake gemini") as fake:
        yield fake


def gateway_config(upstream_url: str, anthropic_url: str = "http://127.0.0.1:9") -> GatewayConfig:
    document = {
        "providers": {
            "fake": {"adapter": "openai", "base_url": f"{upstream_url}/v1", "api_key_env": "FAKE_KEY",
                     "models": ["fake-small", "fake-large"]},
            "fake2": {"adapter": "openai", "base_url": f"{upstream_url}/v1", "api_key_env": "FAKE_KEY",
                      "headers": {"x-which": "fake2"}, "models": ["fake-small"]},
            "locked": {"adapter": "openai", "base_url": f"{upstream_url}/v1", "api_key_env": "WRONG_KEY",
                       "models": ["fake-small"]},
            "claude": {"adapter": "anthropic", "base_url": f"{anthropic_url}/v1", "api_key_env": "CLAUDE_KEY",
                       "models": ["claude-fake-small"]},
        },
        "models": {
            "fake-small": {"providers": ["fake", "fake2"], "input_price_per_mtok": Decimal("1.00"),
                           "output_price_per_mtok": Decimal("2.00"), "context_length": 8192},
            # Output-only pricing makes a request's worst case exactly its cost
            # when max_tokens is the reply's length: admission tests are exact.
            "fake-output-priced": {"providers": ["fake"], "upstream_ids": {"fake": "fake-small"},
                                   "output_price_per_mtok": Decimal("2.00")},
            # Every routable model has a price: the pinned ids outside an entry too.
            "fake/fake-large": {"providers": ["fake"], "input_price_per_mtok": Decimal("1.00"),
                                "output_price_per_mtok": Decimal("2.00")},
            "locked/fake-small": {"providers": ["locked"], "input_price_per_mtok": Decimal("1.00"),
                                  "output_price_per_mtok": Decimal("2.00")},
            # Priced from genai-prices' bundled table (OpenAI's list price), plus 20 %.
            # An Anthropic-dialect model, and one model served by both dialects.
            "claude-fake-small": {"providers": ["claude"], "input_price_per_mtok": Decimal("1.00"),
                                  "output_price_per_mtok": Decimal("2.00")},
            "fake-anywhere": {"providers": ["claude", "fake"],
                              "upstream_ids": {"claude": "claude-fake-small", "fake": "fake-small"},
                              "input_price_per_mtok": Decimal("1.00"), "output_price_per_mtok": Decimal("2.00")},
            "gpt-4o-mini": {"providers": ["fake"], "price_source": "openai:gpt-4o-mini",
                            "markup_percent": Decimal("20")},
            # Embeddings are billed by input tokens; image generation per image,
            # plus the tokens a GPT Image model reports (the fake reports them
            # for ids starting gpt-image).
            "fake-embed": {"kind": "embeddings", "providers": ["fake"], "input_price_per_mtok": Decimal("2.00")},
            "fake-image": {"kind": "images", "providers": ["fake"], "price_per_image": Decimal("0.04")},
            "fake-gpt-image": {"kind": "images", "providers": ["fake"], "upstream_ids": {"fake": "gpt-image-fake"},
                               "input_price_per_mtok": Decimal("5.00"), "output_price_per_mtok": Decimal("40.00"),
                               "price_per_image": Decimal("0.01"), "max_output_tokens": 1000},
        },
    }
    return parse_config(document, {"FAKE_KEY": UPSTREAM_KEY, "WRONG_KEY": "sk-wrong-key-987654321",
                                   "CLAUDE_KEY": ANTHROPIC_KEY})


@pytest.fixture(scope="session", params=MODES)
def gateway(request: pytest.FixtureRequest, upstream: FakeUpstream, fake_anthropic: FakeAnthropic,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = gateway_config(upstream.url, fake_anthropic.url)  # type: ignore[attr-defined]
    data_dir = tmp_path_factory.mktemp(f"gateway-{request.param}")
    secrets = {"admin_token": ADMIN_TOKEN, "stripe_webhook_secret": STRIPE_WEBHOOK_SECRET}
    # The session's many failing requests (fail:503 …) must not open the
    # shared providers' circuits under later tests: circuits are tested with
    # their own gateway (tests/contract/test_circuit_breakers.py).
    resilience = {"breaker_failures": 1_000_000, "retry_backoff": 0.05}
    with gateway_in_mode(request.param, config, data_dir, **secrets, **resilience) as gateway:
        yield gateway
