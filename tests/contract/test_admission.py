"""Admission reserves the worst case: concurrent requests can never spend more
than an account has, in both modes."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import openai
import pytest

from tests.support.gateway import Gateway

# "a b c" is answered "Echo: a b c": 4 output tokens at 2.00 credits per
# million, no input price, and max_tokens = 4, so worst case = cost = 8.
REQUEST = {"model": "fake-output-priced", "max_tokens": 4, "messages": [{"role": "user", "content": "a b c"}]}
COST = 8


def test_two_hundred_at_once_on_an_account_that_affords_fifty(gateway: Gateway) -> None:
    key = gateway.create_key(f"{50 * COST / 1_000_000:.6f}")

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=gateway.base_url, limits=limits, timeout=60,
                                     headers={"authorization": f"Bearer {key}"}) as client:
            responses = await asyncio.gather(*(client.post("/chat/completions", json=REQUEST) for _ in range(200)))
        return [response.status_code for response in responses]

    statuses = Counter(asyncio.run(burst()))

    assert statuses == {200: 50, 402: 150}
    assert gateway.wait_until_settled(key) == 0
    assert gateway.balance(key) == 0
    assert gateway.reconcile(key) == []


def test_402_says_what_the_request_needs(gateway: Gateway) -> None:
    key = gateway.create_key("0.000010")
    client = openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(**{**REQUEST, "max_tokens": 1000})
    assert raised.value.status_code == 402
    assert "can cost up to 0.002000 credits" in raised.value.message
    assert "0.000010 available" in raised.value.message
    client.chat.completions.create(**REQUEST)  # the smaller worst case fits
    assert gateway.wait_for_balance(key, 10 - COST) == 10 - COST
