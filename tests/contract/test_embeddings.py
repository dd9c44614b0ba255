"""Embeddings through the official ``openai`` SDK, in both run modes: the
vectors, their usage, and their charge by input tokens, exactly, in the
balance and the usage report; and every way a request can fail."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import httpx
import openai
import pytest

from loadtests.fake_upstream import FakeUpstream
from tests.conftest import UPSTREAM_KEY
from tests.support.gateway import Gateway

# tests/conftest.py: "fake-embed" costs 2.00 credits per million input tokens
# (2 micro-credits a token); the fake counts a token per word or token id.
PRICE = 2
INPUTS = ["hello there gateway", "one two"]
TOKENS = 5
GRANT = 10_000_000


@pytest.fixture
def key(gateway: Gateway) -> str:
    return gateway.create_key("10")


def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=30)


def usage_rows(gateway: Gateway, key: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{gateway.url}/user/usage", headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def post(gateway: Gateway, key: str, body: object, path: str = "/v1/embeddings") -> httpx.Response:
    return httpx.post(f"{gateway.url}{path}", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30)


def test_embeddings_and_their_charge(gateway: Gateway, key: str, upstream: FakeUpstream) -> None:
    response = client(gateway, key).embeddings.with_raw_response.create(model="fake-embed", input=INPUTS,
                                                                         encoding_format="float")
    result = response.parse()

    assert [item.index for item in result.data] == [0, 1]
    assert [len(item.embedding) for item in result.data] == [8, 8]
    assert all(math.isclose(math.fsum(x * x for x in item.embedding), 1) for item in result.data)
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (TOKENS, TOKENS)
    assert result.usage.model_extra["cost"] == "0.000010"
    assert response.headers["x-gatewayz-cost"] == "0.000010"
    assert response.headers["x-gatewayz-provider"] == "fake"
    job_id = response.headers["x-gatewayz-job-id"]
    assert job_id.startswith("job_")

    sent = upstream.requests[-1]
    assert sent["body"] == {"input": INPUTS, "encoding_format": "float", "model": "fake-embed"}
    assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}" and key not in str(sent)

    assert gateway.wait_for_balance(key, GRANT - TOKENS * PRICE) == GRANT - TOKENS * PRICE
    [row] = usage_rows(gateway, key)
    assert (row["job_id"], row["model"], row["provider"]) == (job_id, "fake-embed", "fake")
    assert (row["input_tokens"], row["output_tokens"], row["images"], row["reported"]) == (TOKENS, 0, 0, True)
    assert (row["cost"], row["cost_micros"]) == ("0.000010", TOKENS * PRICE)
    assert gateway.reconcile(key) == []


def test_the_sdk_default_base64_decodes_to_the_same_vectors(gateway: Gateway, key: str, upstream: FakeUpstream) -> None:
    sdk = client(gateway, key)
    as_floats = sdk.embeddings.create(model="fake-embed", input="hello", encoding_format="float").data[0].embedding
    default = sdk.embeddings.create(model="fake-embed", input="hello")  # the SDK asks for base64 and decodes it
    assert upstream.requests[-1]["body"]["encoding_format"] == "base64"
    assert default.data[0].embedding == pytest.approx(as_floats, abs=1e-7)
    raw = sdk.embeddings.create(model="fake-embed", input="hello", encoding_format="base64").data[0].embedding
    assert isinstance(raw, str)
    # little-endian float32
    assert list(struct.unpack("<8f", base64.b64decode(raw))) == pytest.approx(as_floats, abs=1e-7)


def test_dimensions_and_token_ids(gateway: Gateway, key: str) -> None:
    sdk = client(gateway, key)
    assert len(sdk.embeddings.create(model="fake-embed", input="hi", dimensions=3, encoding_format="float")
               .data[0].embedding) == 3
    ids = sdk.embeddings.create(model="fake-embed", input=[1, 2, 3], encoding_format="float")
    nested = sdk.embeddings.create(model="fake-embed", input=[[1, 2, 3], [40, 50]], encoding_format="float")
    assert (ids.usage.prompt_tokens, len(ids.data)) == (3, 1)
    assert (nested.usage.prompt_tokens, len(nested.data)) == (5, 2)
    spent = PRICE * (1 + 3 + 5)
    assert gateway.wait_for_balance(key, GRANT - spent) == GRANT - spent


def test_an_answer_without_usage_is_charged_an_estimate(gateway: Gateway, key: str) -> None:
    text = "nousage please estimate"  # 23 characters: 6 tokens at four characters a token
    response = post(gateway, key, {"model": "fake-embed", "input": text, "encoding_format": "float"})
    assert response.status_code == 200, response.text
    assert "usage" not in response.json()
    assert response.headers["x-gatewayz-cost"] == "0.000012"
    assert gateway.wait_for_balance(key, GRANT - 12) == GRANT - 12
    [row] = usage_rows(gateway, key)
    assert (row["input_tokens"], row["reported"], row["cost_micros"]) == (6, False, 12)


def test_unprefixed_path_works_too(gateway: Gateway, key: str) -> None:
    response = post(gateway, key, {"model": "fake-embed", "input": "hi"}, path="/embeddings")
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "list"


def test_the_mock_embeds_offline_deterministically(gateway: Gateway, key: str) -> None:
    sdk = client(gateway, key)
    first = sdk.embeddings.create(model="mock/embed", input=["the same text", "other"], encoding_format="float")
    again = sdk.embeddings.create(model="mock/embed", input="the same text")  # base64 on the wire
    assert len(first.data[0].embedding) == 256
    assert again.data[0].embedding == first.data[0].embedding != first.data[1].embedding  # float32 both ways
    assert math.isclose(math.fsum(x * x for x in first.data[0].embedding), 1, rel_tol=1e-5)
    assert first.usage.prompt_tokens == 4


def test_a_chat_model_is_refused_and_an_embeddings_model_cannot_chat(gateway: Gateway, key: str) -> None:
    sdk = client(gateway, key)
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.embeddings.create(model="fake-small", input="hello")
    assert raised.value.body["param"] == "model" and "chat model" in raised.value.message
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(model="fake-embed", messages=[{"role": "user", "content": "hi"}])
    assert "embeddings model" in raised.value.message
    assert gateway.balance(key) == GRANT and gateway.held(key) == 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "fake-embed"}, "input"),
        ({"model": "fake-embed", "input": ""}, "input"),
        ({"model": "fake-embed", "input": []}, "input"),
        ({"model": "fake-embed", "input": ["ok", ""]}, "input.1"),
        ({"model": "fake-embed", "input": ["ok", 1]}, "input.0"),
        ({"model": "fake-embed", "input": [[1, 2], []]}, "input.1"),
        ({"model": "fake-embed", "input": [-1]}, "input.0"),
        ({"model": "fake-embed", "input": [True]}, "input.0"),
        ({"model": "fake-embed", "input": {"text": "hi"}}, "input"),
        ({"model": "fake-embed", "input": ["x"] * 2049}, "input"),
        ({"model": "fake-embed", "input": "hi", "dimensions": 0}, "dimensions"),
        ({"model": "fake-embed", "input": "hi", "dimensions": "3"}, "dimensions"),
        ({"model": "fake-embed", "input": "hi", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "fake-embed", "input": "hi", "stream": True}, "stream"),
        (["hi"], None),
    ],
)
def test_bad_requests_are_400_and_hold_nothing(gateway: Gateway, key: str, upstream: FakeUpstream, body: object,
                                               param: str | None) -> None:
    seen = len(upstream.requests)
    response = post(gateway, key, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert len(upstream.requests) == seen
    assert gateway.balance(key) == GRANT and gateway.held(key) == 0


# An upstream 422 (a validation error, in some providers' dialect) is a 400, as the gateway's own are.
@pytest.mark.parametrize(("command", "status"),
                         [("fail:503", 502), ("fail:429", 429), ("fail:400", 400), ("fail:422", 400)])
def test_an_upstream_failure_is_not_charged(gateway: Gateway, key: str, command: str, status: int) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        client(gateway, key).embeddings.create(model="fake-embed", input=[f"{command} please", "more"])
    assert raised.value.status_code == status
    assert f"fake failure {command[5:]}" in raised.value.message
    if status == 429:
        assert raised.value.response.headers["retry-after"] == "7"
    assert gateway.wait_until_settled(key) == 0
    assert gateway.balance(key) == GRANT
    [row] = usage_rows(gateway, key)
    assert (row["input_tokens"], row["cost_micros"]) == (0, 0)


def test_an_upstream_answer_without_data_is_502(gateway: Gateway, key: str) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        client(gateway, key).embeddings.create(model="fake-embed", input="notobject")
    assert raised.value.status_code == 502
    assert gateway.wait_until_settled(key) == 0 and gateway.balance(key) == GRANT


def test_insufficient_credit_is_402_before_anything_is_sent(gateway: Gateway, upstream: FakeUpstream) -> None:
    # 300 characters hold 100 tokens at 2 micro-credits: 0.000200 credits; 0.000150 is not enough.
    poor = gateway.create_key("0.000150")
    seen = len(upstream.requests)
    with pytest.raises(openai.APIStatusError) as raised:
        client(gateway, poor).embeddings.create(model="fake-embed", input="x" * 300)
    assert raised.value.status_code == 402 and raised.value.body["code"] == "insufficient_credits"
    assert "can cost up to 0.000200 credits" in raised.value.message
    assert len(upstream.requests) == seen
    # a request whose worst case fits is served and charged what it used: one token
    client(gateway, poor).embeddings.create(model="fake-embed", input="x" * 150)
    assert gateway.wait_for_balance(poor, 150 - PRICE) == 150 - PRICE
