"""The Anthropic Messages adapter against a fake Anthropic API on loopback:
answers and streams as the provider sent them, each failure as the status
the client should see, and the provider's key only ever in its header."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic.types
import orjson
import pydantic
import pytest
from pydantic import SecretStr

from schema.catalog import ProviderSpec
from schema.errors import GatewayError, GatewayTimeout, UpstreamError
from schema.settings import Settings
from tests.conftest import ANTHROPIC_KEY
from tests.support.fake_anthropic import TOOL_INPUT, FakeAnthropic
from tests.support.servers import ServerThread
from workers.adapters import build_adapter
from workers.adapters.anthropic import AnthropicAdapter

MODEL = "claude-fake-small"
TOOLS = [{"name": "get_weather", "description": "The weather in a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
SDK_EVENT = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)


def spec(url: str, **overrides: Any) -> ProviderSpec:
    fields: dict[str, Any] = {"name": "anthropic", "adapter": "anthropic", "base_url": f"{url}/v1",
                              "api_key": SecretStr(ANTHROPIC_KEY), **overrides}
    return ProviderSpec(**fields)


@pytest.fixture
async def adapter(fake_anthropic: FakeAnthropic) -> AsyncIterator[AnthropicAdapter]:
    adapter = AnthropicAdapter(spec(fake_anthropic.url), connect_timeout=5)
    yield adapter
    await adapter.aclose()


def ask(text: str, **fields: Any) -> dict[str, Any]:
    return {"max_tokens": 100, "messages": [{"role": "user", "content": text}], **fields}


async def collect(adapter: AnthropicAdapter, payload: dict[str, Any],
                  ) -> tuple[list[dict[str, Any]], GatewayError | None]:
    """The events a stream yielded, and the error that ended it, if one did."""
    events: list[dict[str, Any]] = []
    try:
        async for event in adapter.stream(MODEL, payload):
            events.append(event)
    except GatewayError as error:
        return events, error
    return events, None


async def failure(adapter: AnthropicAdapter, payload: dict[str, Any], *, streamed: bool) -> GatewayError:
    """The error a request ends with; a stream's must come before any event."""
    if streamed:
        events, error = await collect(adapter, payload)
        assert events == [] and error is not None
        return error
    with pytest.raises(GatewayError) as raised:
        await adapter.complete(MODEL, payload)
    return raised.value


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")


# Answers


async def test_complete_returns_the_providers_message(adapter: AnthropicAdapter, fake_anthropic: FakeAnthropic) -> None:
    message = await adapter.complete(MODEL, ask("hello there", system="Be brief."))
    assert message["type"] == "message" and message["role"] == "assistant" and message["model"] == MODEL
    assert message["content"] == [{"type": "text", "text": "Echo: hello there"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["input_tokens"] == 4 and message["usage"]["output_tokens"] == 3
    assert message == fake_anthropic.requests[-1]["response"]
    anthropic.types.Message.model_validate(message)
    sent = orjson.loads(fake_anthropic.requests[-1]["body"])
    assert sent == {**ask("hello there", system="Be brief."), "model": MODEL}


async def test_complete_with_a_tool_returns_its_tool_use(adapter: AnthropicAdapter) -> None:
    message = await adapter.complete(MODEL, ask("tool please", tools=TOOLS))
    assert message["stop_reason"] == "tool_use"
    assert [(b["type"], b["name"], b["input"]) for b in message["content"]] == [("tool_use", "get_weather", TOOL_INPUT)]


async def test_stream_yields_every_event_in_order_through_message_stop(adapter: AnthropicAdapter,
                                                                      fake_anthropic: FakeAnthropic) -> None:
    events, error = await collect(adapter, ask("hi you"))
    assert error is None
    assert [e["type"] for e in events] == [
        "message_start", "content_block_start", "ping", *["content_block_delta"] * 3, "content_block_stop",
        "message_delta", "message_stop",
    ]
    assert events == fake_anthropic.requests[-1]["events"]
    assert text_of(events) == "Echo: hi you"
    assert events[0]["message"]["usage"]["input_tokens"] == 2
    assert events[-2]["delta"]["stop_reason"] == "end_turn" and events[-2]["usage"] == {"output_tokens": 3}
    for event in events:
        if event["type"] != "ping":  # the SDK reads pings but has no type for them
            SDK_EVENT.validate_python(event)
    assert orjson.loads(fake_anthropic.requests[-1]["body"])["stream"] is True


async def test_a_streamed_tool_use_arrives_whole(adapter: AnthropicAdapter) -> None:
    events, error = await collect(adapter, ask("tool please", tools=TOOLS))
    assert error is None
    starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    assert starts == [{"type": "tool_use", "id": "toolu_fake1", "name": "get_weather", "input": {}}]
    fragments = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"]
    assert len(fragments) > 2 and orjson.loads("".join(fragments)) == TOOL_INPUT
    assert [e["delta"]["stop_reason"] for e in events if e["type"] == "message_delta"] == ["tool_use"]
    assert events[-1] == {"type": "message_stop"}


async def test_a_reply_cut_at_max_tokens_says_so(adapter: AnthropicAdapter) -> None:
    events, error = await collect(adapter, ask("one two three four", max_tokens=2))
    assert error is None and text_of(events) == "Echo: one"
    assert [e["delta"]["stop_reason"] for e in events if e["type"] == "message_delta"] == ["max_tokens"]


async def test_a_slow_stream_is_yielded_as_it_comes(adapter: AnthropicAdapter) -> None:
    arrivals: list[float] = []
    async for event in adapter.stream(MODEL, ask("slow " + "word " * 10)):
        if event["type"] == "content_block_delta":
            arrivals.append(time.monotonic())
    # 12 words, 50 ms apart: the first reaches the caller long before the last.
    assert len(arrivals) == 12 and arrivals[-1] - arrivals[0] > 0.4


# Failures


@pytest.mark.parametrize(
    ("status", "client_status", "retry_after"),
    [
        (400, 400, None),
        (404, 404, None),
        (413, 413, None),
        (429, 429, 7.0),
        (401, 502, None),  # the provider refused the gateway's key: never the client's 401
        (403, 502, None),
        (402, 502, None),  # the gateway's own account is out of credit
        (500, 502, None),
        (503, 502, None),
        (529, 502, 7.0),  # overloaded: the provider's failure, and when to retry
    ],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_an_http_error_is_the_status_the_client_should_see(
    adapter: AnthropicAdapter, status: int, client_status: int, retry_after: float | None, streamed: bool,
) -> None:
    error = await failure(adapter, ask(f"fail:{status}"), streamed=streamed)
    assert isinstance(error, UpstreamError)
    assert (error.status, error.retry_after) == (client_status, retry_after)
    assert "provider 'anthropic'" in error.message


@pytest.mark.parametrize(
    ("kind", "client_status"),
    [
        ("overloaded_error", 502),
        ("rate_limit_error", 429),
        ("api_error", 502),
        ("invalid_request_error", 400),
        ("request_too_large", 413),
        ("authentication_error", 502),
        ("an_error_type_from_the_future", 502),
    ],
)
async def test_an_error_event_mid_stream_ends_it_with_that_status(adapter: AnthropicAdapter, kind: str,
                                                                 client_status: int) -> None:
    events, error = await collect(adapter, ask(f"error:{kind} and more words"))
    assert text_of(events) == f"Echo: error:{kind}"  # what came before the error was yielded
    assert "message_stop" not in [e["type"] for e in events]
    assert isinstance(error, UpstreamError) and error.status == client_status


async def test_an_error_answered_without_streaming_has_its_status(adapter: AnthropicAdapter) -> None:
    with pytest.raises(UpstreamError) as raised:
        await adapter.complete(MODEL, ask("error:rate_limit_error"))
    assert raised.value.status == 429 and "fake rate_limit_error" in raised.value.message


async def test_a_dropped_connection_is_an_error_not_an_end(adapter: AnthropicAdapter) -> None:
    events, error = await collect(adapter, ask("drop this stream please"))
    assert text_of(events) == "Echo: drop"
    assert isinstance(error, UpstreamError) and error.status == 502


async def test_a_stream_that_ends_without_message_stop_is_an_error(adapter: AnthropicAdapter) -> None:
    events, error = await collect(adapter, ask("truncate this stream please"))
    assert text_of(events) == "Echo: truncate"
    assert isinstance(error, UpstreamError) and error.status == 502
    assert "ended the stream without message_stop" in error.message


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_a_provider_that_hangs_times_out(fake_anthropic: FakeAnthropic, streamed: bool) -> None:
    adapter = AnthropicAdapter(spec(fake_anthropic.url, timeout=0.5), connect_timeout=5)
    started = time.monotonic()
    try:
        error = await failure(adapter, ask("hang"), streamed=streamed)
    finally:
        await adapter.aclose()
    assert isinstance(error, GatewayTimeout) and error.status == 504
    assert time.monotonic() - started < 5


async def test_an_unreachable_provider_is_a_502() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    adapter = AnthropicAdapter(spec(f"http://127.0.0.1:{port}"), connect_timeout=2)
    try:
        with pytest.raises(UpstreamError) as raised:
            await adapter.complete(MODEL, ask("hi"))
        assert raised.value.status == 502 and "unreachable" in raised.value.message
    finally:
        await adapter.aclose()


# The provider's key


async def test_the_key_is_redacted_from_what_the_provider_says(adapter: AnthropicAdapter) -> None:
    error = await failure(adapter, ask(f"fail:400 your key {ANTHROPIC_KEY} is odd"), streamed=False)
    assert error.status == 400 and error.message.endswith("your key [redacted] is odd")
    events, error = await collect(adapter, ask(f"error:{ANTHROPIC_KEY}"))  # quoted in an error event
    assert events and error is not None
    assert ANTHROPIC_KEY not in error.message and "[redacted]" in error.message


async def test_a_refused_key_is_the_gateways_fault_and_never_shown(fake_anthropic: FakeAnthropic) -> None:
    wrong = "sk-ant-wrong-key-987654321"
    adapter = AnthropicAdapter(spec(fake_anthropic.url, api_key=SecretStr(wrong)), connect_timeout=5)
    try:
        with pytest.raises(UpstreamError) as raised:
            await adapter.complete(MODEL, ask("hi"))
    finally:
        await adapter.aclose()
    assert raised.value.status == 502 and "credentials" in raised.value.message
    assert wrong not in raised.value.message and ANTHROPIC_KEY not in raised.value.message
    assert fake_anthropic.requests[-1]["status"] == 401


async def test_the_key_travels_only_in_the_x_api_key_header(adapter: AnthropicAdapter,
                                                            fake_anthropic: FakeAnthropic) -> None:
    before = len(fake_anthropic.requests)
    await adapter.complete(MODEL, ask("hi"))
    await collect(adapter, ask("hi"))
    await collect(adapter, ask("tool", tools=TOOLS))
    seen = fake_anthropic.requests[before:]
    assert len(seen) == 3
    for request in seen:
        headers = request["headers"]
        assert headers.getlist("x-api-key") == [ANTHROPIC_KEY]
        assert "authorization" not in headers
        assert headers.getlist("anthropic-version") == ["2023-06-01"]
        assert [value for name, value in headers.items() if ANTHROPIC_KEY in value] == [ANTHROPIC_KEY]
        assert ANTHROPIC_KEY.encode() not in request["body"]
        assert ANTHROPIC_KEY not in request["url"]
        assert request["url"] == f"{fake_anthropic.url}/v1/messages"


async def test_bearer_auth_sends_the_key_as_authorization_only(fake_anthropic: FakeAnthropic) -> None:
    adapter = AnthropicAdapter(spec(fake_anthropic.url, auth="bearer"), connect_timeout=5)
    try:
        events, error = await collect(adapter, ask("hi"))
    finally:
        await adapter.aclose()
    assert error is None and events[-1]["type"] == "message_stop"
    headers = fake_anthropic.requests[-1]["headers"]
    assert headers.getlist("authorization") == [f"Bearer {ANTHROPIC_KEY}"]
    assert "x-api-key" not in headers


async def test_each_provider_sends_only_its_own_key() -> None:
    # Two providers on one server that takes any key: neither key reaches the other's requests.
    fake = FakeAnthropic()
    keys = {"first": "sk-ant-first-1111111111", "second": "sk-ant-second-2222222222"}
    with ServerThread(fake.app, name="fake anthropic, any key") as server:
        adapters = {name: AnthropicAdapter(spec(server.url, name=name, api_key=SecretStr(key)), connect_timeout=5)
                    for name, key in keys.items()}
        try:
            for name, adapter in adapters.items():
                await adapter.complete(MODEL, ask(f"from {name}"))
                await collect(adapter, ask(f"from {name}"))
        finally:
            for adapter in adapters.values():
                await adapter.aclose()
    assert len(fake.requests) == 4
    for request in fake.requests:
        name = orjson.loads(request["body"])["messages"][0]["content"].split()[1]
        other = keys["second" if name == "first" else "first"]
        assert request["headers"].getlist("x-api-key") == [keys[name]]
        assert all(other not in value for value in request["headers"].values())


async def test_a_configured_version_header_replaces_the_default(fake_anthropic: FakeAnthropic) -> None:
    adapter = AnthropicAdapter(spec(fake_anthropic.url, headers={"Anthropic-Version": "2024-10-22",
                                                                 "anthropic-beta": "fake-beta"}), connect_timeout=5)
    try:
        await adapter.complete(MODEL, ask("hi"))
    finally:
        await adapter.aclose()
    headers = fake_anthropic.requests[-1]["headers"]
    assert headers.getlist("anthropic-version") == ["2024-10-22"]
    assert headers.getlist("anthropic-beta") == ["fake-beta"]


async def test_the_anthropic_adapter_kind_builds_this_adapter(fake_anthropic: FakeAnthropic) -> None:
    built = build_adapter(spec(fake_anthropic.url), Settings())
    try:
        assert isinstance(built, AnthropicAdapter) and built.dialect == "anthropic"
        assert (await built.complete(MODEL, ask("built")))["content"][0]["text"] == "Echo: built"
    finally:
        await built.aclose()
