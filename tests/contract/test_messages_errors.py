"""``/v1/messages`` refusals in Anthropic's error format, through the
official ``anthropic`` SDK, in both run modes: nothing is queued or charged."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.support.gateway import Gateway

HELLO = [{"role": "user", "content": "hello"}]


def client(gateway: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=gateway.url, max_retries=0, timeout=30)


def test_wrong_key_is_an_anthropic_authentication_error(gateway: Gateway) -> None:
    with pytest.raises(anthropic.AuthenticationError) as raised:
        client(gateway, "gz-not-a-key").messages.create(model="mock/echo", max_tokens=10, messages=HELLO)
    assert raised.value.status_code == 401
    assert raised.value.body == {"type": "error", "error": {"type": "authentication_error",
                                                              "message": "Incorrect API key provided"}}


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
def test_missing_max_tokens_is_an_invalid_request_whichever_auth_header(gateway: Gateway, header: str) -> None:
    key = gateway.create_key("1")
    value = key if header == "x-api-key" else f"Bearer {key}"
    response = httpx.post(f"{gateway.url}/v1/messages", headers={header: value, "anthropic-version": "2023-06-01"},
                          json={"model": "mock/echo", "messages": HELLO})
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in error["error"]["message"]
    assert gateway.balance(key) == 1_000_000


@pytest.mark.parametrize(("body", "names"), [
    ({"model": "mock/echo", "max_tokens": 5, "messages": []}, "messages"),
    ({"model": "mock/echo", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"model": "mock/echo", "max_tokens": 5, "messages": [{"role": ["user"], "content": "x"}]}, "messages.0.role"),
    ({"model": "mock/echo", "max_tokens": 5, "messages": [{"role": "user", "content": 7}]}, "messages.0.content"),
    ({"model": "mock/echo", "max_tokens": 0, "messages": HELLO}, "max_tokens"),
    ({"model": "mock/echo", "max_tokens": 5, "messages": HELLO, "stream": "yes"}, "stream"),
    ({"model": "mock/echo", "max_tokens": 5, "messages": HELLO, "system": 3}, "system"),
    ({"max_tokens": 5, "messages": HELLO}, "model"),
])
def test_malformed_requests_name_the_field(gateway: Gateway, body: dict[str, object], names: str) -> None:
    key = gateway.create_key("1")
    response = httpx.post(f"{gateway.url}/v1/messages", headers={"x-api-key": key}, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(names)


def test_body_that_is_not_json(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    response = httpx.post(f"{gateway.url}/v1/messages", headers={"x-api-key": key}, content=b"{nope")
    assert response.status_code == 400
    assert response.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                            "message": "The request body is not valid JSON"}}


def test_unknown_model_is_not_found(gateway: Gateway) -> None:
    with pytest.raises(anthropic.NotFoundError) as raised:
        client(gateway, gateway.create_key("1")).messages.create(model="no-such-model", max_tokens=10, messages=HELLO)
    assert raised.value.body["error"]["type"] == "not_found_error"


def test_insufficient_credit_is_a_billing_error(gateway: Gateway) -> None:
    key = gateway.create_key("0.000001")
    with pytest.raises(anthropic.APIStatusError) as raised:
        client(gateway, key).messages.create(model="claude-fake-small", max_tokens=1000, messages=HELLO)
    assert raised.value.status_code == 402
    assert raised.value.body["error"]["type"] == "billing_error"
    assert gateway.balance(key) == 1
