"""Chat completions through the official ``openai`` SDK, in both run modes,
against a fake OpenAI-compatible upstream: what a user sees, and what it costs."""

from __future__ import annotations

import httpx
import openai
import orjson
import pytest

from loadtests.fake_upstream import FakeUpstream
from tests.conftest import UPSTREAM_KEY
from tests.support.gateway import Gateway

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there gateway"}]
# The fake counts a token per word: 5 prompt words; reply "Echo: hello there gateway" is 4.
PROMPT_TOKENS, COMPLETION_TOKENS = 5, 4
COST = PROMPT_TOKENS * 1 + COMPLETION_TOKENS * 2  # micro-credits at 1.00 / 2.00 credits per million tokens


@pytest.fixture
def key(gateway: Gateway) -> str:
    return gateway.create_key("10")


def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=30)


def test_completion_and_its_charge(gateway: Gateway, key: str) -> None:
    completion = client(gateway, key).chat.completions.create(model="fake-small", messages=MESSAGES)

    assert completion.choices[0].message.content == "Echo: hello there gateway"
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert completion.id.startswith("chatcmpl-")
    assert completion.usage.model_extra["cost"] == "0.000013"
    assert gateway.wait_for_balance(key, 10_000_000 - COST) == 10_000_000 - COST


def test_cost_header_is_what_was_charged(gateway: Gateway, key: str) -> None:
    response = client(gateway, key).chat.completions.with_raw_response.create(model="fake-small", messages=MESSAGES)
    assert response.headers["x-gatewayz-cost"] == "0.000013"
    assert gateway.wait_for_balance(key, 10_000_000 - COST) == 10_000_000 - COST


def test_stream_with_usage(gateway: Gateway, key: str) -> None:
    stream = client(gateway, key).chat.completions.create(
        model="fake-small", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: hello there gateway"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == COMPLETION_TOKENS
    assert chunks[-1].usage.model_extra["cost"] == "0.000013"
    assert gateway.wait_for_balance(key, 10_000_000 - COST) == 10_000_000 - COST


def test_stream_without_usage_is_still_charged(gateway: Gateway, key: str, upstream: FakeUpstream) -> None:
    chunks = list(client(gateway, key).chat.completions.create(model="fake-small", messages=MESSAGES, stream=True))

    assert all(c.choices and c.usage is None for c in chunks), "the client did not ask for usage"
    assert upstream.requests[-1]["body"]["stream_options"] == {"include_usage": True}, "the gateway always asks"
    assert gateway.wait_for_balance(key, 10_000_000 - COST) == 10_000_000 - COST


def test_raw_sse_bytes(gateway: Gateway, key: str) -> None:
    body = {"model": "fake-small", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{gateway.base_url}/chat/completions", json=body,
                      headers={"authorization": f"Bearer {key}"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-gatewayz-provider"] == "fake"
        assert response.headers["x-gatewayz-job-id"].startswith("job_")
        raw = response.read()
    events = raw.split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    for event in events[:-2]:
        assert event.startswith(b"data: {")
        assert orjson.loads(event[6:])["object"] == "chat.completion.chunk"


def test_unprefixed_path_works_too(gateway: Gateway, key: str) -> None:
    response = httpx.post(f"{gateway.url}/chat/completions", json={"model": "fake-small", "messages": MESSAGES},
                          headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert response.json()["object"] == "chat.completion"


def test_tool_calls_and_extra_fields_pass_through(gateway: Gateway, key: str, upstream: FakeUpstream) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    stream = client(gateway, key).chat.completions.create(
        model="fake-small", messages=[{"role": "user", "content": "tool"}], tools=tools, stream=True,
        extra_body={"top_k": 7, "provider_specific": {"a": [1, 2]}}, temperature=0.25,
    )
    chunks = list(stream)

    arguments = "".join(c.choices[0].delta.tool_calls[0].function.arguments or ""
                        for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    assert orjson.loads(arguments) == {"city": "Paris", "unit": "celsius"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    sent = upstream.requests[-1]["body"]
    assert sent["tools"] == tools and sent["top_k"] == 7 and sent["provider_specific"] == {"a": [1, 2]}
    assert sent["temperature"] == 0.25 and sent["model"] == "fake-small"


def test_keys_stay_where_they_belong(gateway: Gateway, key: str, upstream: FakeUpstream) -> None:
    client(gateway, key).chat.completions.create(model="fake-small", messages=MESSAGES)
    headers = upstream.requests[-1]["headers"]
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert key not in orjson.dumps(upstream.requests[-1]).decode()

    response = httpx.post(f"{gateway.base_url}/chat/completions",
                          json={"model": "locked/fake-small", "messages": MESSAGES},
                          headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 502
    assert "credentials" in response.json()["error"]["message"]
    assert "sk-wrong-key" not in response.text and UPSTREAM_KEY not in response.text


def test_routing_pinned_and_by_candidates(gateway: Gateway, key: str, upstream: FakeUpstream) -> None:
    sdk = client(gateway, key)
    response = sdk.chat.completions.with_raw_response.create(model="fake2/fake-small", messages=MESSAGES)
    assert response.headers["x-gatewayz-provider"] == "fake2"
    assert upstream.requests[-1]["headers"]["x-which"] == "fake2"

    response = sdk.chat.completions.with_raw_response.create(model="fake-small", messages=MESSAGES)
    assert response.headers["x-gatewayz-provider"] == "fake"
    assert "x-which" not in upstream.requests[-1]["headers"]

    response = sdk.chat.completions.with_raw_response.create(model="fake/fake-large", messages=MESSAGES)
    assert response.parse().model == "fake-large"


def test_models_lists_what_is_routable(gateway: Gateway, key: str) -> None:
    models = {m.id: m for m in client(gateway, key).models.list()}
    assert {"fake-small", "fake/fake-large", "fake2/fake-small", "mock/echo"} <= set(models)
    assert models["fake-small"].model_extra["pricing"] == {"input_per_mtok": "1.00", "output_per_mtok": "2.00",
                                                           "unit": "credits"}
    assert models["fake-small"].model_extra["price_source"] == "config"


def test_mock_provider_works_offline(gateway: Gateway, key: str) -> None:
    completion = client(gateway, key).chat.completions.create(model="mock/echo",
                                                              messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "You said: hi"


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"authorization": "Bearer gz-not-a-key"}, 401), ({"authorization": "Basic abc"}, 401)],
)
def test_authentication(gateway: Gateway, headers: dict[str, str], status: int) -> None:
    response = httpx.post(f"{gateway.base_url}/chat/completions", json={"model": "fake-small", "messages": MESSAGES},
                          headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["type"] == "authentication_error"


def test_no_credits_is_402(gateway: Gateway, upstream: FakeUpstream) -> None:
    broke = gateway.create_key("0")
    seen = len(upstream.requests)
    with pytest.raises(openai.APIStatusError) as raised:
        client(gateway, broke).chat.completions.create(model="fake-small", messages=MESSAGES)
    assert raised.value.status_code == 402
    assert raised.value.body["code"] == "insufficient_credits"
    assert len(upstream.requests) == seen, "nothing was sent upstream"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": MESSAGES}, "model"),
        ({"model": "fake-small"}, "messages"),
        ({"model": "fake-small", "messages": []}, "messages"),
        ({"model": "fake-small", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"model": "fake-small", "messages": [{"role": {}, "content": "x"}]}, "messages.0.role"),  # was a 500
        ({"model": "fake-small", "messages": MESSAGES, "max_tokens": -5}, "max_tokens"),
        ({"model": "fake-small", "messages": MESSAGES, "max_tokens": 10**12}, "max_tokens"),
        ({"model": "fake-small", "messages": MESSAGES, "stream": "yes"}, "stream"),
        ([1, 2], None),
    ],
)
def test_bad_requests_are_400(gateway: Gateway, key: str, body: object, param: str | None) -> None:
    response = httpx.post(f"{gateway.base_url}/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["param"] == param


def test_malformed_json_is_400(gateway: Gateway, key: str) -> None:
    response = httpx.post(f"{gateway.base_url}/chat/completions", content=b"{not json",
                          headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]


def test_unknown_model_is_404(gateway: Gateway, key: str) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client(gateway, key).chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert raised.value.body["code"] == "model_not_found"


def test_upstream_429_keeps_status_and_retry_after(gateway: Gateway, key: str) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        client(gateway, key).chat.completions.create(model="fake-small",
                                                     messages=[{"role": "user", "content": "fail:429"}])
    assert raised.value.response.headers["retry-after"] == "7"
    assert gateway.wait_for_balance(key, 10_000_000) == 10_000_000, "a failed job is not charged"


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_5xx_becomes_502(gateway: Gateway, key: str, stream: bool) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        response = client(gateway, key).chat.completions.create(
            model="fake-small", messages=[{"role": "user", "content": "fail:503"}], stream=stream)
        list(response) if stream else None
    assert raised.value.status_code == 502
    assert "fake failure 503" in raised.value.message


def test_stream_cut_midway_ends_in_an_error_not_a_complete_stream(gateway: Gateway, key: str) -> None:
    received: list[str] = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in client(gateway, key).chat.completions.create(
            model="fake-small", messages=[{"role": "user", "content": "drop it like it is hot"}], stream=True
        ):
            received.extend(choice.delta.content or "" for choice in chunk.choices)
    assert "".join(received) == "Echo: drop"
    assert "fake" in str(raised.value.message)
    # What was delivered is charged, as an estimate: never nothing, never the whole answer.
    spent = 10_000_000 - gateway.wait_for_balance(key, 10_000_000 - 1, timeout=2)
    assert spent > 0


def test_one_model_by_id(gateway: Gateway, key: str) -> None:
    model = client(gateway, key).models.retrieve("fake2/fake-small")
    assert (model.id, model.owned_by) == ("fake2/fake-small", "fake2")
    with pytest.raises(openai.NotFoundError):
        client(gateway, key).models.retrieve("ghost/model")


def test_an_upstream_answer_that_is_not_a_completion_is_a_prompt_502(gateway: Gateway, key: str) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        client(gateway, key).chat.completions.create(model="fake-small",
                                                     messages=[{"role": "user", "content": "notobject"}])
    assert raised.value.status_code == 502
    assert "not a JSON object" in raised.value.message
    assert gateway.wait_for_balance(key, 10_000_000) == 10_000_000
