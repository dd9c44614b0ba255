"""The hold is a hard bound on what a request can cost, in both modes: every
number it multiplies is a whole number in range (else 400, nothing held), a
request that sets no output limit is sent upstream with the one its hold
assumed, and an upstream that reports more than was held is charged the
hold, not a micro-credit more."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from billing.admission import DEFAULT_MAX_OUTPUT_TOKENS
from loadtests.fake_upstream import FakeUpstream
from schema.database import create_engine
from schema.tables import holds, usage_records
from tests.support.gateway import Gateway

CREDITS = "1"
# fake-output-priced: no input price, 2 credits per million output tokens, so
# a hold is exactly 2 micro-credits per output token it allows.
MODEL = "fake-output-priced"


def post(gateway: Gateway, key: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}{path}", json=body, headers={"authorization": f"Bearer {key}"}, timeout=60)


def chat(content: str, **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}


def hold_and_charge(gateway: Gateway, job_id: str) -> tuple[int, int, int]:
    """The job's hold, what it was charged and what it cost beyond the hold, from the ledger."""

    async def read() -> tuple[int, int, int]:
        engine = create_engine(gateway.settings)
        try:
            async with engine.connect() as connection:
                held = (await connection.execute(select(holds.c.amount).where(holds.c.job_id == job_id))).scalar_one()
                record = (await connection.execute(select(usage_records.c.cost, usage_records.c.uncharged)
                                                   .where(usage_records.c.job_id == job_id))).one()
            return held, record.cost, record.uncharged
        finally:
            await engine.dispose()

    return asyncio.run(read())


BAD_CHOICES = [50.0, 2.0, 1e16, 10**16, 2**70, 0, -1, 129, True, "2", [2], {"n": 2}]


@pytest.mark.parametrize("value", BAD_CHOICES, ids=repr)
def test_n_must_be_a_whole_number_in_range(gateway: Gateway, upstream: FakeUpstream, value: object) -> None:
    key = gateway.create_key(CREDITS)
    marker = f"n-{uuid.uuid4().hex}"
    response = post(gateway, key, "/chat/completions", chat(marker, max_tokens=100_000, n=value))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "n"
    assert "integer from 1 to 128" in response.json()["error"]["message"]
    assert gateway.balance(key) == 1_000_000 and gateway.held(key) == 0, "nothing held, nothing charged"
    assert not any(marker in str(seen["body"]) for seen in upstream.requests), "never sent upstream"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("value", [100.0, 1e7, 10_000_001, 0, True, "100"], ids=repr)
def test_output_limits_must_be_whole_numbers_in_range(gateway: Gateway, field: str, value: object) -> None:
    key = gateway.create_key(CREDITS)
    response = post(gateway, key, "/chat/completions", chat("hello", **{field: value}))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == field
    assert gateway.balance(key) == 1_000_000


@pytest.mark.parametrize("value", [100.0, 1e16, 0, False])
def test_messages_max_tokens_must_be_a_whole_number(gateway: Gateway, value: object) -> None:
    key = gateway.create_key(CREDITS)
    body = {"model": MODEL, "max_tokens": value, "messages": [{"role": "user", "content": "hello"}]}
    response = httpx.post(f"{gateway.url}/v1/messages", json=body, headers={"x-api-key": key}, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert gateway.balance(key) == 1_000_000


@pytest.mark.parametrize("value", [2.0, 1e16, 11, 0])
def test_image_n_must_be_a_whole_number_in_range(gateway: Gateway, value: object) -> None:
    key = gateway.create_key(CREDITS)
    response = post(gateway, key, "/images/generations", {"model": "fake-image", "prompt": "a cat", "n": value})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "n"
    assert gateway.balance(key) == 1_000_000


def test_a_request_without_a_limit_is_sent_with_the_holds(gateway: Gateway, upstream: FakeUpstream) -> None:
    key = gateway.create_key(CREDITS)
    marker = f"bound-{uuid.uuid4().hex}"
    response = post(gateway, key, "/chat/completions", chat(marker))
    assert response.status_code == 200, response.text
    sent = next(seen["body"] for seen in upstream.requests if marker in str(seen["body"]))
    assert sent["max_tokens"] == DEFAULT_MAX_OUTPUT_TOKENS, "the bound the hold assumed"
    assert "max_completion_tokens" not in sent
    # A limit the client set is sent as it was.
    marker = f"own-{uuid.uuid4().hex}"
    post(gateway, key, "/chat/completions", chat(marker, max_completion_tokens=50)).raise_for_status()
    sent = next(seen["body"] for seen in upstream.requests if marker in str(seen["body"]))
    assert (sent.get("max_tokens"), sent["max_completion_tokens"]) == (None, 50)


def test_the_mock_stops_where_the_hold_does(gateway: Gateway) -> None:
    """The probe's case: a prompt far longer than any output limit, no max_tokens,
    an echo that would answer every word. It answers what the hold allowed."""
    key = gateway.create_key(CREDITS)
    words = " ".join(["hello"] * (DEFAULT_MAX_OUTPUT_TOKENS + 500))
    body = {"model": "mock/echo", "messages": [{"role": "user", "content": words}]}
    response = post(gateway, key, "/chat/completions", body)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == DEFAULT_MAX_OUTPUT_TOKENS
    assert gateway.wait_until_settled(key) == 0
    held, charged, uncharged = hold_and_charge(gateway, response.headers["x-gatewayz-job-id"])
    assert charged <= held and uncharged == 0
    assert gateway.balance(key) == 1_000_000 - charged


@pytest.mark.parametrize("stream", [False, True])
def test_usage_beyond_the_hold_is_not_charged(gateway: Gateway, stream: bool) -> None:
    """A provider that ignores max_tokens (or miscounts) reports 100,000 output
    tokens for a request that allowed 10: the account pays the hold."""
    key = gateway.create_key(CREDITS)
    body = chat("usage:0:100000 hello", max_tokens=10, stream=stream,
                **({"stream_options": {"include_usage": True}} if stream else {}))
    response = post(gateway, key, "/chat/completions", body)
    assert response.status_code == 200, response.text
    hold = 10 * 2  # 10 output tokens at 2 micro-credits
    if stream:
        assert response.text.rstrip().endswith("data: [DONE]")
        assert '"cost":"0.000020"' in response.text, "the usage chunk shows what is charged"
    else:
        assert response.json()["usage"]["cost"] == "0.000020"
        assert response.headers["x-gatewayz-cost"] == "0.000020"
    assert gateway.wait_until_settled(key) == 0
    assert gateway.balance(key) == 1_000_000 - hold
    assert hold_and_charge(gateway, response.headers["x-gatewayz-job-id"]) == (hold, hold, 100_000 * 2 - hold)
    assert gateway.reconcile(key) == []


def test_embeddings_beyond_the_hold_are_not_charged(gateway: Gateway) -> None:
    """fake-embed: 2 credits per million input tokens; "usage:1000000 x" is
    held as its bytes (5 tokens) and reported as a million."""
    key = gateway.create_key(CREDITS)
    response = post(gateway, key, "/embeddings", {"model": "fake-embed", "input": "usage:1000000 x"})
    assert response.status_code == 200, response.text
    assert gateway.wait_until_settled(key) == 0
    held, charged, uncharged = hold_and_charge(gateway, response.headers["x-gatewayz-job-id"])
    assert (charged, uncharged) == (held, 2_000_000 - held)
    assert response.headers["x-gatewayz-cost"] == f"0.{held:06d}"
    assert gateway.balance(key) == 1_000_000 - held
