"""``POST /v1/messages`` through the official ``anthropic`` SDK, in both run
modes: natively to an Anthropic provider, translated to an OpenAI-compatible
one, and the OpenAI dialect translated to an Anthropic provider. What a user
sees, and what it costs."""

from __future__ import annotations

import anthropic
import httpx
import openai
import orjson
import pytest

from loadtests.fake_upstream import FakeUpstream
from tests.conftest import ANTHROPIC_KEY, UPSTREAM_KEY
from tests.support.fake_anthropic import TOOL_INPUT, FakeAnthropic
from tests.support.gateway import Gateway

START = 10_000_000  # micro-credits granted to each key
SYSTEM = "be brief"
HELLO = [{"role": "user", "content": "hello there gateway"}]
# Both fakes count a token per word: 2 system + 3 user words in; "Echo: hello there gateway" is 4 out.
INPUT_TOKENS, OUTPUT_TOKENS = 5, 4
COST = INPUT_TOKENS * 1 + OUTPUT_TOKENS * 2  # at 1.00 / 2.00 credits per million tokens
WEATHER = {"name": "get_weather", "description": "the weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                            "required": ["city"]}}
OPENAI_WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "the weather in a city",
                                                    "parameters": WEATHER["input_schema"]}}


@pytest.fixture
def key(gateway: Gateway) -> str:
    return gateway.create_key("10")


def claude(gateway: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=gateway.url, max_retries=0, timeout=30)


def gpt(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=30)


def last_body(fake: FakeAnthropic | FakeUpstream) -> dict[str, object]:
    seen = fake.requests[-1]["body"]
    return orjson.loads(seen) if isinstance(seen, bytes) else seen


# Natively: an Anthropic client, an Anthropic provider


def test_native_message_and_its_charge(gateway: Gateway, key: str, fake_anthropic: FakeAnthropic) -> None:
    response = claude(gateway, key).messages.with_raw_response.create(
        model="claude-fake-small", max_tokens=100, system=SYSTEM, messages=HELLO, extra_body={"top_k": 5})
    message = response.parse()

    assert [block.text for block in message.content] == ["Echo: hello there gateway"]
    assert message.stop_reason == "end_turn" and message.role == "assistant"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS)
    assert response.headers["x-gatewayz-provider"] == "claude"
    assert response.headers["x-gatewayz-cost"] == "0.000013"
    # The request went on untouched (Anthropic-only fields too), with the provider's key, never the client's.
    sent = fake_anthropic.requests[-1]
    assert last_body(fake_anthropic)["top_k"] == 5 and last_body(fake_anthropic)["system"] == SYSTEM
    assert sent["headers"]["x-api-key"] == ANTHROPIC_KEY and key not in str(sent["headers"])
    assert gateway.wait_for_balance(key, START - COST) == START - COST


def test_native_stream(gateway: Gateway, key: str) -> None:
    with claude(gateway, key).messages.stream(model="claude-fake-small", max_tokens=100, system=SYSTEM,
                                              messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == "Echo: hello there gateway"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS)
    assert gateway.wait_for_balance(key, START - COST) == START - COST


def test_native_streamed_tool_use_arrives_intact(gateway: Gateway, key: str) -> None:
    with claude(gateway, key).messages.stream(model="claude-fake-small", max_tokens=100, tools=[WEATHER],
                                              messages=[{"role": "user", "content": "tool please"}]) as stream:
        final = stream.get_final_message()

    assert final.stop_reason == "tool_use"
    [block] = final.content
    assert (block.type, block.name, block.input) == ("tool_use", "get_weather", TOOL_INPUT)


def test_provider_rate_limit_is_an_anthropic_rate_limit_error(gateway: Gateway, key: str) -> None:
    with pytest.raises(anthropic.RateLimitError) as raised:
        claude(gateway, key).messages.create(model="claude-fake-small", max_tokens=10,
                                             messages=[{"role": "user", "content": "fail:429"}])
    assert raised.value.response.headers["retry-after"] == "7"
    assert raised.value.body["type"] == "error" and raised.value.body["error"]["type"] == "rate_limit_error"
    assert gateway.wait_for_balance(key, START) == START


def test_stream_cut_mid_way_ends_with_an_error_event(gateway: Gateway, key: str) -> None:
    messages = [{"role": "user", "content": "drop it now please"}]
    with (pytest.raises(anthropic.APIStatusError) as raised,
          claude(gateway, key).messages.stream(model="claude-fake-small", max_tokens=100, messages=messages) as stream):
        for _ in stream.text_stream:
            pass
    assert raised.value.body["type"] == "error"
    assert gateway.wait_until_settled(key) == 0


# Translated: an Anthropic client, an OpenAI-compatible provider


def test_anthropic_client_to_an_openai_provider(gateway: Gateway, key: str, upstream: FakeUpstream) -> None:
    # The SDK (2.x) no longer takes sampling parameters as arguments; the API still does.
    message = claude(gateway, key).messages.create(model="fake-small", max_tokens=100, system=SYSTEM,
                                                   messages=HELLO, stop_sequences=["END"],
                                                   extra_body={"temperature": 0.5})

    assert [block.text for block in message.content] == ["Echo: hello there gateway"]
    assert message.stop_reason == "end_turn" and message.type == "message"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS)
    sent = last_body(upstream)
    assert sent["messages"][0] == {"role": "system", "content": SYSTEM}
    assert sent["max_tokens"] == 100 and sent["stop"] == ["END"] and sent["temperature"] == 0.5
    assert upstream.requests[-1]["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert gateway.wait_for_balance(key, START - COST) == START - COST


def test_anthropic_client_streams_from_an_openai_provider(gateway: Gateway, key: str) -> None:
    with claude(gateway, key).messages.stream(model="fake-small", max_tokens=100, system=SYSTEM,
                                              messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == "Echo: hello there gateway"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == OUTPUT_TOKENS
    assert gateway.wait_for_balance(key, START - COST) == START - COST


def test_anthropic_tool_use_through_an_openai_provider(gateway: Gateway, key: str, upstream: FakeUpstream) -> None:
    with claude(gateway, key).messages.stream(model="fake-small", max_tokens=100, tools=[WEATHER],
                                              messages=[{"role": "user", "content": "tool please"}]) as stream:
        final = stream.get_final_message()

    assert final.stop_reason == "tool_use"
    [block] = final.content
    assert (block.name, block.input) == ("get_weather", {"city": "Paris", "unit": "celsius"})
    assert last_body(upstream)["tools"] == [OPENAI_WEATHER]


# Translated: an OpenAI client, an Anthropic provider


def test_openai_client_to_an_anthropic_provider(gateway: Gateway, key: str, fake_anthropic: FakeAnthropic) -> None:
    completion = gpt(gateway, key).chat.completions.create(
        model="claude-fake-small", messages=[{"role": "system", "content": SYSTEM}, *HELLO], max_tokens=100)

    assert completion.choices[0].message.content == "Echo: hello there gateway"
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS)
    assert completion.usage.model_extra["cost"] == "0.000013"
    sent = last_body(fake_anthropic)
    assert sent["system"] == SYSTEM and sent["max_tokens"] == 100 and sent["messages"] == HELLO
    assert gateway.wait_for_balance(key, START - COST) == START - COST


def test_openai_client_streams_tool_calls_from_an_anthropic_provider(gateway: Gateway, key: str) -> None:
    chunks = list(gpt(gateway, key).chat.completions.create(
        model="claude-fake-small", messages=[{"role": "user", "content": "tool please"}], tools=[OPENAI_WEATHER],
        stream=True, stream_options={"include_usage": True}))

    calls = [call for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or ()]
    assert calls[0].id and calls[0].function.name == "get_weather"
    assert orjson.loads("".join(call.function.arguments or "" for call in calls)) == TOOL_INPUT
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 2


def test_what_cannot_be_translated_is_refused_and_costs_nothing(gateway: Gateway, key: str) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        gpt(gateway, key).chat.completions.create(model="claude-fake-small", messages=HELLO, n=2)
    assert "n" in raised.value.body["param"]
    assert gateway.balance(key) == START


def test_a_candidate_that_cannot_take_the_request_is_passed_over(gateway: Gateway, key: str,
                                                                 upstream: FakeUpstream) -> None:
    # `fake-anywhere` prefers the Anthropic provider; asking for two choices
    # only the OpenAI-compatible one can give goes there instead.
    response = gpt(gateway, key).chat.completions.with_raw_response.create(model="fake-anywhere", messages=HELLO, n=2)
    assert response.headers["x-gatewayz-provider"] == "fake"
    assert last_body(upstream)["n"] == 2


PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def test_images_by_url_and_base64_reach_an_openai_provider(gateway: Gateway, key: str, upstream: FakeUpstream) -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "text", "text": "describe these"},
    ]
    claude(gateway, key).messages.create(model="fake-small", max_tokens=50,
                                         messages=[{"role": "user", "content": content}])

    [message] = last_body(upstream)["messages"]
    urls = [part["image_url"]["url"] for part in message["content"] if part["type"] == "image_url"]
    assert urls == [f"data:image/png;base64,{PIXEL}", "https://example.com/cat.png"]
    assert {"type": "text", "text": "describe these"} in message["content"]


def test_images_by_url_and_base64_reach_an_anthropic_provider(gateway: Gateway, key: str,
                                                              fake_anthropic: FakeAnthropic) -> None:
    content = [
        {"type": "text", "text": "describe these"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    gpt(gateway, key).chat.completions.create(model="claude-fake-small",
                                              messages=[{"role": "user", "content": content}])

    [message] = last_body(fake_anthropic)["messages"]
    sources = [block["source"] for block in message["content"] if block["type"] == "image"]
    assert sources == [{"type": "base64", "media_type": "image/png", "data": PIXEL},
                       {"type": "url", "url": "https://example.com/cat.png"}]


@pytest.mark.parametrize("model", ["fake-small", "claude-fake-small"])
def test_stream_bytes_are_framed_as_anthropic_sends_them(gateway: Gateway, key: str, model: str) -> None:
    body = {"model": model, "max_tokens": 100, "messages": HELLO, "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/messages", json=body, timeout=30,
                      headers={"x-api-key": key, "anthropic-version": "2023-06-01"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = [frame for frame in response.read().decode().split("\n\n") if frame]

    names = []
    for frame in frames:
        event, data = frame.split("\n")
        name = event.removeprefix("event: ")
        assert orjson.loads(data.removeprefix("data: "))["type"] == name
        names.append(name)
    # Anthropic pings right after content_block_start; the translation, right after message_start.
    assert names[:3] in (["message_start", "ping", "content_block_start"],
                         ["message_start", "content_block_start", "ping"])
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
