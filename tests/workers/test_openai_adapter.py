"""The OpenAI-compatible adapter against the fake upstream on loopback: the
output limit goes where the provider reads it (``output_limit_field``)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import SecretStr

from loadtests.fake_upstream import FakeUpstream
from schema.catalog import ProviderSpec
from tests.conftest import UPSTREAM_KEY
from workers.adapters.openai import OpenAIAdapter


def adapter(upstream: FakeUpstream, **overrides: Any) -> OpenAIAdapter:
    spec = ProviderSpec(name="fake", adapter="openai", base_url=f"{upstream.url}/v1",  # type: ignore[attr-defined]
                        api_key=SecretStr(UPSTREAM_KEY), **overrides)
    return OpenAIAdapter(spec, connect_timeout=5)


def sent(upstream: FakeUpstream, marker: str) -> dict[str, Any]:
    return next(seen["body"] for seen in upstream.requests if marker in str(seen["body"]))


@pytest.mark.parametrize("stream", [False, True])
async def test_max_tokens_goes_to_max_completion_tokens_where_the_provider_reads_only_that(
        upstream: FakeUpstream, stream: bool) -> None:
    client = adapter(upstream, output_limit_field="max_completion_tokens")
    marker = uuid.uuid4().hex
    payload = {"messages": [{"role": "user", "content": marker}], "max_tokens": 7}
    try:
        if stream:
            [chunk async for chunk in client.stream("fake-small", payload)]
        else:
            await client.complete("fake-small", payload)
    finally:
        await client.aclose()
    body = sent(upstream, marker)
    assert body["max_completion_tokens"] == 7 and "max_tokens" not in body
    assert payload["max_tokens"] == 7, "the job's payload is left as it was"


async def test_a_client_that_sets_both_keeps_both(upstream: FakeUpstream) -> None:
    client = adapter(upstream, output_limit_field="max_completion_tokens")
    marker = uuid.uuid4().hex
    try:
        await client.complete("fake-small", {"messages": [{"role": "user", "content": marker}], "max_tokens": 9,
                                             "max_completion_tokens": 5})
    finally:
        await client.aclose()
    assert (sent(upstream, marker)["max_tokens"], sent(upstream, marker)["max_completion_tokens"]) == (9, 5)


async def test_by_default_max_tokens_is_sent_as_it_is(upstream: FakeUpstream) -> None:
    client = adapter(upstream)
    marker = uuid.uuid4().hex
    try:
        await client.complete("fake-small", {"messages": [{"role": "user", "content": marker}], "max_tokens": 7})
    finally:
        await client.aclose()
    assert sent(upstream, marker)["max_tokens"] == 7
