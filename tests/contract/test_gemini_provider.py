"""A Gemini provider behind the gateway, through the official ``openai``
(and ``anthropic``) SDK, in both run modes: the client speaks its own
dialect and never sees Gemini's shapes; a tool call round-trips; what Gemini cannot take is the client's 400
before any credit is held; and the charge is Gemini's reported usage."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import orjson
import pytest

from schema.catalog import parse_config
from tests.conftest import GEMINI_KEY, MODES
from tests.support.fake_gemini import THOUGHT_SIGNATURE, TOOL_ARGS, FakeGemini
from tests.support.gateway import Gateway, gateway_in_mode

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there gateway"}]
# The fake counts a token per word: 5 prompt words; reply "Echo: hello there gateway" is 4.
COST = 5 * 1 + 4 * 2  # micro-credits at 1.00 / 2.00 credits per million tokens
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module", params=MODES)
def gemini_gateway(request: pytest.FixtureRequest, fake_gemini: FakeGemini,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    prices = {"input_price_per_mtok": Decimal("1.00"), "output_price_per_mtok": Decimal("2.00")}
    config = parse_config({
        "providers": {"gem": {"adapter": "gemini", "base_url": f"{fake_gemini.url}/v1beta",
                              "api_key_env": "GEM_KEY", "models": ["gemini-fake-flash"]}},
        "models": {"gemini-fake": {"providers": ["gem"], "upstream_ids": {"gem": "gemini-fake-flash"}, **prices},
                   "gem/gemini-fake-flash": {"providers": ["gem"], **prices}},
    }, {"GEM_KEY": GEMINI_KEY})
    with gateway_in_mode(request.param, config, tmp_path_factory.mktemp(f"gemini-{request.param}")) as gateway:
        yield gateway


@pytest.fixture
def key(gemini_gateway: Gateway) -> str:
    return gemini_gateway.create_key("10")


def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=30)


def sent(fake: FakeGemini) -> dict[str, Any]:
    return orjson.loads(fake.requests[-1]["body"])


def test_a_completion_from_gemini_and_its_charge(gemini_gateway: Gateway, key: str, fake_gemini: FakeGemini) -> None:
    response = client(gemini_gateway, key).chat.completions.with_raw_response.create(
        model="gemini-fake", messages=MESSAGES, max_tokens=30)
    completion = response.parse()
    assert completion.choices[0].message.content == "Echo: hello there gateway"
    assert completion.choices[0].finish_reason == "stop" and completion.model == "gemini-fake"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 4)
    assert response.headers["x-gatewayz-provider"] == "gem"
    assert sent(fake_gemini)["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert fake_gemini.requests[-1]["headers"]["x-goog-api-key"] == GEMINI_KEY
    assert gemini_gateway.wait_for_balance(key, 10_000_000 - COST) == 10_000_000 - COST


def test_a_stream_from_gemini_with_usage(gemini_gateway: Gateway, key: str) -> None:
    chunks = list(client(gemini_gateway, key).chat.completions.create(
        model="gemini-fake", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello there gateway"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert gemini_gateway.wait_for_balance(key, 10_000_000 - COST) == 10_000_000 - COST


def test_a_tool_call_round_trip(gemini_gateway: Gateway, key: str, fake_gemini: FakeGemini) -> None:
    sdk = client(gemini_gateway, key)
    question = [{"role": "user", "content": "tool: what is the weather in Paris?"}]
    first = sdk.chat.completions.create(model="gemini-fake", messages=question, tools=[WEATHER])
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = first.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and orjson.loads(call.function.arguments) == TOOL_ARGS

    follow_up = [*question, first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    second = sdk.chat.completions.create(model="gemini-fake", messages=follow_up, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert sent(fake_gemini)["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": TOOL_ARGS},
                                     "thoughtSignature": THOUGHT_SIGNATURE}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                                                         "response": {"content": "sunny, 21 C"}}}]}]


def test_what_gemini_cannot_take_is_a_400_before_any_hold(gemini_gateway: Gateway, key: str,
                                                          fake_gemini: FakeGemini) -> None:
    before = len(fake_gemini.requests)
    with pytest.raises(openai.BadRequestError) as refused:
        client(gemini_gateway, key).chat.completions.create(model="gemini-fake", messages=MESSAGES,
                                                            logit_bias={"50256": -100})
    assert refused.value.status_code == 400
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == "logit_bias" and "`logit_bias`" in error["message"]
    assert len(fake_gemini.requests) == before
    assert gemini_gateway.balance(key) == 10_000_000 and gemini_gateway.held(key) == 0


def test_geminis_rate_limit_reaches_the_client(gemini_gateway: Gateway, key: str) -> None:
    with pytest.raises(openai.RateLimitError) as limited:
        client(gemini_gateway, key).chat.completions.create(model="gemini-fake",
                                                            messages=[{"role": "user", "content": "fail:429"}])
    assert limited.value.response.headers["retry-after"] == "7"
    assert gemini_gateway.wait_for_balance(key, 10_000_000) == 10_000_000


def test_an_anthropic_client_streams_from_gemini(gemini_gateway: Gateway, key: str, fake_gemini: FakeGemini) -> None:
    claude = anthropic.Anthropic(api_key=key, base_url=gemini_gateway.url, max_retries=0, timeout=30)
    with claude.messages.stream(model="gemini-fake", max_tokens=30, system="be brief",
                                messages=[{"role": "user", "content": "hello there gateway"}]) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == "Echo: hello there gateway" and message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 4)
    assert sent(fake_gemini)["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert gemini_gateway.wait_for_balance(key, 10_000_000 - COST) == 10_000_000 - COST
