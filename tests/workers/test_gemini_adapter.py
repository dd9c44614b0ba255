"""The Gemini adapter against a fake Gemini API on loopback: answers and
streams as the provider sent them, each failure as the status the client
should see, and the provider's key only ever in its configured header."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from schema.catalog import ProviderSpec
from schema.errors import GatewayError, GatewayTimeout, UpstreamError
from schema.settings import Settings
from tests.conftest import GEMINI_KEY
from tests.support.fake_gemini import THOUGHT_SIGNATURE, TOOL_ARGS, FakeGemini
from workers.adapters import build_adapter
from workers.adapters.gemini import GeminiAdapter, GeminiHTTP

MODEL = "gemini-fake-flash"
TOOLS = [{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": {
    "type": "object", "properties": {"city": {"type": "string"}}}}]}]


def spec(url: str, **overrides: Any) -> ProviderSpec:
    fields: dict[str, Any] = {"name": "gemini", "adapter": "gemini", "base_url": f"{url}/v1beta",
                              "api_key": SecretStr(GEMINI_KEY), **overrides}
    return ProviderSpec(**fields)


@pytest.fixture
async def adapter(fake_gemini: FakeGemini) -> AsyncIterator[GeminiAdapter]:
    adapter = GeminiAdapter(spec(fake_gemini.url), connect_timeout=5)
    yield adapter
    await adapter.aclose()


def ask(text: str, **fields: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **fields}


async def collect(adapter: GeminiAdapter, payload: dict[str, Any], model: str = MODEL,
                  ) -> tuple[list[dict[str, Any]], GatewayError | None]:
    """The events a stream yielded, and the error that ended it, if one did."""
    events: list[dict[str, Any]] = []
    try:
        async for event in adapter.stream(model, payload):
            events.append(event)
    except GatewayError as error:
        return events, error
    return events, None


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(part.get("text", "") for event in events for candidate in event.get("candidates", [])
                   for part in candidate["content"]["parts"])


# Answers


async def test_complete_returns_the_providers_answer(adapter: GeminiAdapter, fake_gemini: FakeGemini) -> None:
    payload = ask("hello there", systemInstruction={"parts": [{"text": "Be brief."}]},
                  generationConfig={"maxOutputTokens": 50})
    answer = await adapter.complete(MODEL, payload)
    sent = fake_gemini.requests[-1]
    assert answer == sent["response"]
    assert answer["candidates"][0]["content"]["parts"] == [{"text": "Echo: hello there"}]
    assert answer["candidates"][0]["finishReason"] == "STOP"
    assert answer["usageMetadata"] == {"promptTokenCount": 4, "candidatesTokenCount": 3, "totalTokenCount": 7}
    assert sent["url"] == f"{fake_gemini.url}/v1beta/models/{MODEL}:generateContent"
    assert orjson.loads(sent["body"]) == payload  # the payload as it is: no model, no stream


async def test_stream_yields_each_event_as_sent(adapter: GeminiAdapter, fake_gemini: FakeGemini) -> None:
    events, error = await collect(adapter, ask("one two three"))
    sent = fake_gemini.requests[-1]
    assert error is None and events == sent["events"]
    assert sent["url"] == f"{fake_gemini.url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    assert text_of(events) == "Echo: one two three" and len(events) == 4
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert events[-1]["usageMetadata"]["candidatesTokenCount"] == 4


async def test_a_streamed_function_call_comes_whole(adapter: GeminiAdapter) -> None:
    events, error = await collect(adapter, ask("tool please", tools=TOOLS))
    assert error is None
    [event] = events
    [part] = event["candidates"][0]["content"]["parts"]
    assert part == {"functionCall": {"name": "get_weather", "args": TOOL_ARGS}, "thoughtSignature": THOUGHT_SIGNATURE}


async def test_a_blocked_prompt_is_a_complete_answer(adapter: GeminiAdapter) -> None:
    answer = await adapter.complete(MODEL, ask("block this"))
    assert answer["promptFeedback"]["blockReason"] == "SAFETY" and "candidates" not in answer
    events, error = await collect(adapter, ask("block this"))
    assert error is None and [e["promptFeedback"]["blockReason"] for e in events] == ["SAFETY"]


async def test_a_model_named_with_its_resource_prefix(adapter: GeminiAdapter, fake_gemini: FakeGemini) -> None:
    await adapter.complete(f"models/{MODEL}", ask("hi"))
    assert fake_gemini.requests[-1]["url"].endswith(f"/v1beta/models/{MODEL}:generateContent")


# Failures: each as the status the client should see.

FAILURES: list[tuple[str, int, float | None, str]] = [
    ("fail:400", 400, None, "fake failure 400"),
    ("fail:404", 404, None, "fake failure 404"),
    ("fail:429", 429, 7.0, "fake failure 429"),
    ("fail:500", 502, None, "fake failure 500"),
    ("fail:503", 502, None, "fake failure 503"),
    ("fail:401", 502, None, "refused the gateway's credentials"),
    ("fail:403", 502, None, "refused the gateway's credentials"),
]


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(("command", "status", "retry_after", "message"), FAILURES, ids=[f[0] for f in FAILURES])
async def test_failures(adapter: GeminiAdapter, command: str, status: int, retry_after: float | None, message: str,
                        streamed: bool) -> None:
    if streamed:
        events, error = await collect(adapter, ask(command))
        assert events == [] and error is not None
    else:
        with pytest.raises(GatewayError) as raised:
            await adapter.complete(MODEL, ask(command))
        error = raised.value
    assert isinstance(error, UpstreamError)
    assert (error.status, error.retry_after) == (status, retry_after)
    assert message in error.message and "provider 'gemini'" in error.message


async def test_an_unknown_model_is_not_found(adapter: GeminiAdapter) -> None:
    with pytest.raises(UpstreamError) as raised:
        await adapter.complete("gemini-nonexistent", ask("hi"))
    assert raised.value.status == 404 and "gemini-nonexistent is not found" in raised.value.message


@pytest.mark.parametrize(("command", "status", "message"), [
    ("drop", 502, "broke off the connection"),
    ("truncate", 502, "ended the stream before it finished"),
    ("error:503", 502, "fake error 503"),
    ("error:429", 429, "fake error 429"),
    ("error:400", 400, "fake error 400"),
])
async def test_a_stream_cut_after_it_began_fails(adapter: GeminiAdapter, command: str, status: int,
                                                 message: str) -> None:
    events, error = await collect(adapter, ask(f"{command} and some more words"))
    assert text_of(events) == f"Echo: {command}"  # two words went out first
    assert isinstance(error, UpstreamError) and error.status == status and message in error.message


async def test_a_provider_that_never_answers_times_out(fake_gemini: FakeGemini) -> None:
    adapter = GeminiAdapter(spec(fake_gemini.url, timeout=0.5), connect_timeout=5)
    try:
        started = time.monotonic()
        with pytest.raises(GatewayTimeout):
            await adapter.complete(MODEL, ask("hang"))
        events, error = await collect(adapter, ask("hang"))
        assert events == [] and isinstance(error, GatewayTimeout)
        assert time.monotonic() - started < 5
    finally:
        await adapter.aclose()


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_provider(unused_port: int) -> None:
    adapter = GeminiAdapter(spec(f"http://127.0.0.1:{unused_port}"), connect_timeout=2)
    try:
        with pytest.raises(UpstreamError) as raised:
            await adapter.complete(MODEL, ask("hi"))
    finally:
        await adapter.aclose()
    assert raised.value.status == 502 and "unreachable" in raised.value.message


# The provider's key


@pytest.mark.parametrize(("key", "message"), [
    ("AIza-wrong-key-000000000000", "refused the gateway's credentials"),  # Google: 400 API_KEY_INVALID
    (None, "refused the gateway's credentials"),  # Google: 403 PERMISSION_DENIED
])
async def test_a_refused_key_is_the_gateways_fault(fake_gemini: FakeGemini, key: str | None, message: str) -> None:
    adapter = GeminiAdapter(spec(fake_gemini.url, api_key=SecretStr(key) if key else None), connect_timeout=5)
    try:
        with pytest.raises(UpstreamError) as raised:
            await adapter.complete(MODEL, ask("hi"))
    finally:
        await adapter.aclose()
    assert raised.value.status == 502 and message in raised.value.message
    assert fake_gemini.requests[-1]["status"] in (400, 403)


async def test_the_key_is_redacted_from_messages(adapter: GeminiAdapter) -> None:
    with pytest.raises(UpstreamError) as raised:
        await adapter.complete(MODEL, ask(f"fail:400 echoing {GEMINI_KEY} back"))
    assert GEMINI_KEY not in raised.value.message and "[redacted]" in raised.value.message
    events, error = await collect(adapter, ask(f"fail:422 {GEMINI_KEY}"))
    assert error is not None and GEMINI_KEY not in error.message and "[redacted]" in error.message


async def test_the_key_goes_only_in_x_goog_api_key(adapter: GeminiAdapter, fake_gemini: FakeGemini) -> None:
    await adapter.complete(MODEL, ask("hi"))
    await collect(adapter, ask("hi"))
    for sent in fake_gemini.requests[-2:]:
        assert sent["headers"].get("x-goog-api-key") == GEMINI_KEY and sent["status"] == 200
        assert "authorization" not in sent["headers"]
        assert GEMINI_KEY not in sent["url"] and GEMINI_KEY.encode() not in sent["body"]
        assert [value for name, value in sent["headers"].items() if GEMINI_KEY in value] == [GEMINI_KEY]


async def test_vertex_style_bearer_auth(fake_gemini: FakeGemini) -> None:
    adapter = GeminiAdapter(spec(fake_gemini.url, auth="bearer"), connect_timeout=5)
    try:
        answer = await adapter.complete(MODEL, ask("hi"))
    finally:
        await adapter.aclose()
    sent = fake_gemini.requests[-1]
    assert answer["candidates"][0]["content"]["parts"] == [{"text": "Echo: hi"}]
    assert sent["headers"]["authorization"] == f"Bearer {GEMINI_KEY}" and "x-goog-api-key" not in sent["headers"]


def test_build_adapter_picks_gemini_with_its_key_header(fake_gemini: FakeGemini) -> None:
    provider = spec(fake_gemini.url)
    assert provider.auth == "x-goog-api-key"
    assert isinstance(build_adapter(provider, Settings()), GeminiAdapter)


# Google's error bodies, beyond what the fake sends


def google_http() -> GeminiHTTP:
    return GeminiHTTP(ProviderSpec(name="gemini", adapter="gemini", base_url="https://example.invalid/v1beta",
                                   api_key=SecretStr(GEMINI_KEY)), connect_timeout=1)


def test_a_429_without_retry_after_waits_as_its_retry_info_says() -> None:
    body = {"error": {"code": 429, "message": "You exceeded your current quota.", "status": "RESOURCE_EXHAUSTED",
                      "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                                  {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "35.5s"}]}}
    error = google_http().status_error(429, orjson.dumps(body), {})
    assert (error.status, error.retry_after) == (429, 35.5) and "exceeded your current quota" in error.message


def test_vertex_errors_in_an_array_are_read() -> None:
    body = [{"error": {"code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT"}}]
    error = google_http().status_error(400, orjson.dumps(body), {})
    assert error.status == 400 and "Request contains an invalid argument." in error.message


def test_an_account_google_will_not_serve_is_the_gateways_fault() -> None:
    body = {"error": {"code": 400, "message": "User location is not supported for the API use.",
                      "status": "FAILED_PRECONDITION"}}
    error = google_http().status_error(400, orjson.dumps(body), {})
    assert error.status == 502 and "User location is not supported" in error.message
