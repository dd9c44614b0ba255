"""A property, in both modes: whatever a client sends and whatever usage its
upstream reports, no charge exceeds its hold and no account goes below zero.

Hypothesis writes the requests: any of the endpoints, real and junk values
for every field the hold reads (``n``, ``max_tokens``,
``max_completion_tokens``, ``stream``), extra fields of any JSON, several at
once on one small account; the fake upstream reports the usage it is told
to (``usage:<prompt>:<completion>``), up to a trillion tokens."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from schema.database import create_engine
from schema.tables import holds, usage_records
from tests.support.gateway import Gateway

GRANTS = {"0.000100": 100, "0.010000": 10_000, "1": 1_000_000}

leaves = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
          | st.text(max_size=8))
json_values = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)
numbers = st.one_of(st.none(), st.integers(-3, 40), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                    st.booleans(), st.text(max_size=4), st.sampled_from([1.0, 2.0, 50.0, 1e16, 10**16, 128, 129]))
reported = st.integers(0, 10**12)
content = st.tuples(reported, reported, st.sampled_from(["hello", "a b c", "one two three four five"])).map(
    lambda usage: f"usage:{usage[0]}:{usage[1]} {usage[2]}")
extras = st.dictionaries(
    st.sampled_from(["temperature", "top_p", "seed", "user", "tools", "stop", "x-junk", "metadata"]),
    json_values, max_size=2)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    endpoint = draw(st.sampled_from(["chat", "messages", "embeddings"]))
    fields = {name: value for name, value in (("n", draw(numbers)), ("max_tokens", draw(numbers)),
                                              ("max_completion_tokens", draw(numbers))) if value is not None}
    if endpoint == "embeddings":
        return "/v1/embeddings", {"model": "fake-embed", "input": draw(content), **draw(extras)}
    model = draw(st.sampled_from(["fake-small", "fake-output-priced", "mock/echo"]))
    body = {"model": model, "messages": [{"role": "user", "content": draw(content)}], **fields, **draw(extras)}
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans() | leaves)
    if endpoint == "messages":
        body.pop("max_completion_tokens", None)
        return "/v1/messages", body
    if draw(st.booleans()):
        body["stream_options"] = {"include_usage": True}
    return "/v1/chat/completions", body


async def send(gateway: Gateway, key: str, batch: list[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60, headers=headers) as client:
        # The standard library writes what orjson cannot: integers past 64 bits, Infinity.
        return await asyncio.gather(*(client.post(path, content=json.dumps(body)) for path, body in batch))


async def ledger_rows(gateway: Gateway, job_ids: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Each job's hold and charge, as the ledger recorded them."""
    engine = create_engine(gateway.settings)
    try:
        async with engine.connect() as connection:
            held = dict((await connection.execute(
                select(holds.c.job_id, holds.c.amount).where(holds.c.job_id.in_(job_ids)))).all())
            charged = dict((await connection.execute(
                select(usage_records.c.job_id, usage_records.c.cost).where(usage_records.c.job_id.in_(job_ids)))).all())
        return held, charged
    finally:
        await engine.dispose()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(grant=st.sampled_from(sorted(GRANTS)), batch=st.lists(requests(), min_size=1, max_size=4))
def test_no_request_spends_more_than_its_hold_or_the_account(gateway: Gateway, grant: str,
                                                             batch: list[tuple[str, dict[str, Any]]]) -> None:
    key = gateway.create_key(grant)
    responses = asyncio.run(send(gateway, key, batch))
    for response in responses:
        assert response.status_code in (200, 400, 402), (response.status_code, response.text)
    assert gateway.wait_until_settled(key) == 0
    jobs = [response.headers["x-gatewayz-job-id"] for response in responses if response.status_code == 200]
    held, charged = asyncio.run(ledger_rows(gateway, jobs))
    assert sorted(held) == sorted(charged) == sorted(jobs), "every answered job held and settled once"
    for job in jobs:
        assert 0 <= charged[job] <= held[job], (job, charged[job], held[job])
    balance = gateway.balance(key)
    assert balance == GRANTS[grant] - sum(charged.values()) >= 0
