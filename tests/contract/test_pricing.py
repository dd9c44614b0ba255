"""A model priced from genai-prices' bundled table, through the gateway in
both modes: what ``/v1/models`` shows, and what a request is charged."""

from __future__ import annotations

import math
from decimal import Decimal

import genai_prices
import httpx
import openai

from tests.support.gateway import Gateway

# tests/conftest.py: "gpt-4o-mini" is served by the fake upstream, priced from
# genai-prices' entry openai:gpt-4o-mini plus 20 %, at 1 credit per US dollar.
LIST_INPUT, LIST_OUTPUT = Decimal("0.15"), Decimal("0.60")  # OpenAI's list price, USD per million tokens
MARKUP = Decimal("1.20")

# A long system prompt makes the input price visible after rounding; the fake
# counts a token per word and echoes the last user message.
MESSAGES = [{"role": "system", "content": " ".join(["word"] * 10_000)},
            {"role": "user", "content": "hello there gateway"}]
PROMPT_TOKENS, COMPLETION_TOKENS = 10_003, 4
COST = 1804  # micro-credits: ceil(10,003 × 0.18 + 4 × 0.72) = ceil(1,803.42)


def test_the_list_price_and_its_source_are_shown(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    response = httpx.get(f"{gateway.base_url}/models/gpt-4o-mini", headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    model = response.json()
    assert model["pricing"] == {"input_per_mtok": "0.18", "output_per_mtok": "0.72", "unit": "credits"}
    assert model["price_source"] == "genai-prices:openai:gpt-4o-mini"
    assert Decimal(model["pricing"]["input_per_mtok"]) == LIST_INPUT * MARKUP


def test_a_request_is_charged_the_list_price_plus_markup(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    client = openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=30)

    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert completion.usage.model_extra["cost"] == "0.001804"
    assert gateway.wait_for_balance(key, 1_000_000 - COST) == 1_000_000 - COST
    assert gateway.reconcile(key) == []


def test_the_charge_agrees_with_the_library_own_calculator() -> None:
    usage = genai_prices.Usage(input_tokens=PROMPT_TOKENS, output_tokens=COMPLETION_TOKENS)
    usd = genai_prices.calc_price(usage, "gpt-4o-mini", provider_id="openai").total_price
    assert usd == (PROMPT_TOKENS * LIST_INPUT + COMPLETION_TOKENS * LIST_OUTPUT) / 1_000_000
    assert math.ceil(usd * MARKUP * 1_000_000) == COST
