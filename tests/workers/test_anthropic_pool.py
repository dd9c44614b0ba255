"""A job in Anthropic's dialect served by an Anthropic provider, through the
pool runtime on in-process transports: nothing is translated, so the client
gets exactly the provider's events (or message), and the job is charged the
usage the provider reported."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from schema.catalog import ProviderSpec
from schema.jobs import Job, Price, Route, Usage
from tests.conftest import ANTHROPIC_KEY
from tests.support.fake_anthropic import TOOL_FRAGMENTS, FakeAnthropic
from tests.support.pools import memory_pool, run_job
from workers.adapters.anthropic import AnthropicAdapter
from workers.pool import ProviderPool

UPSTREAM_MODEL = "claude-fake-small"
TOOLS = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]


@pytest.fixture
async def pool(fake_anthropic: FakeAnthropic) -> AsyncIterator[ProviderPool]:
    provider = ProviderSpec(name="anthropic", adapter="anthropic", base_url=f"{fake_anthropic.url}/v1",
                            api_key=SecretStr(ANTHROPIC_KEY))
    adapter = AnthropicAdapter(provider, connect_timeout=5)
    yield memory_pool(provider, adapter)
    await adapter.aclose()


def job(text: str, *, stream: bool, **fields: Any) -> Job:
    payload = {"max_tokens": 100, "system": "Be brief.", "messages": [{"role": "user", "content": text}], **fields}
    return Job(dialect="anthropic", account_id=1, key_id=1, model="claude-fake",
               routes=[Route(provider="anthropic", upstream_model=UPSTREAM_MODEL)], payload=payload, stream=stream,
               deadline=time.time() + 60, price=Price(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2)))


def sent_body(fake: FakeAnthropic) -> dict[str, Any]:
    return orjson.loads(fake.requests[-1]["body"])


async def test_a_streamed_job_relays_the_providers_events_untouched(pool: ProviderPool,
                                                                    fake_anthropic: FakeAnthropic) -> None:
    item = job("hi you", stream=True)
    events, usage = await run_job(pool, item)
    assert sent_body(fake_anthropic) == {**item.payload, "model": UPSTREAM_MODEL, "stream": True}
    assert [e["kind"] for e in events[:-1]] == ["chunk"] * (len(events) - 1)
    assert [e["data"] for e in events[:-1]] == fake_anthropic.requests[-1]["events"]
    assert [e["data"]["type"] for e in events[:-1]][-2:] == ["message_delta", "message_stop"]
    # input: "Be brief." and "hi you" are 4 words; output: "Echo: hi you", 3.
    assert events[-1] == {"job": item.id, "seq": len(events) - 1, "kind": "end",
                          "data": {"usage": Usage(input_tokens=4, output_tokens=3, reported=True).model_dump()}}
    assert [(u.job_id, u.provider, u.usage) for u in usage] == [(item.id, "anthropic", Usage(input_tokens=4,
                                                                                               output_tokens=3))]


async def test_a_streamed_tool_use_is_relayed_and_charged(pool: ProviderPool, fake_anthropic: FakeAnthropic) -> None:
    events, usage = await run_job(pool, job("tool please", stream=True, tools=TOOLS))
    assert [e["data"] for e in events if e["kind"] == "chunk"] == fake_anthropic.requests[-1]["events"]
    assert [u.usage for u in usage] == [Usage(input_tokens=4, output_tokens=len(TOOL_FRAGMENTS))]


async def test_a_job_without_streaming_answers_the_providers_message(pool: ProviderPool,
                                                                     fake_anthropic: FakeAnthropic) -> None:
    item = job("hello there you", stream=False)
    events, usage = await run_job(pool, item)
    assert sent_body(fake_anthropic) == {**item.payload, "model": UPSTREAM_MODEL}
    assert [e["kind"] for e in events] == ["response"]
    assert events[0]["data"] == fake_anthropic.requests[-1]["response"]
    assert events[0]["data"]["content"] == [{"type": "text", "text": "Echo: hello there you"}]
    assert [u.usage for u in usage] == [Usage(input_tokens=5, output_tokens=4)]


@pytest.mark.parametrize(("status", "client_status"), [(529, 502), (429, 429)])
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_a_refusal_before_any_output_is_an_error_and_free(pool: ProviderPool, status: int,
                                                                client_status: int, stream: bool) -> None:
    events, usage = await run_job(pool, job(f"fail:{status}", stream=stream))
    assert [e["kind"] for e in events] == ["error"]
    assert events[0]["data"]["status"] == client_status and events[0]["data"]["retry_after"] == 7
    assert [u.usage for u in usage] == [Usage(input_tokens=0, output_tokens=0)]


async def test_an_error_event_mid_stream_ends_the_job_with_an_error(pool: ProviderPool,
                                                                    fake_anthropic: FakeAnthropic) -> None:
    events, usage = await run_job(pool, job("error:overloaded_error and more", stream=True))
    chunks = [e["data"] for e in events if e["kind"] == "chunk"]
    assert chunks == fake_anthropic.requests[-1]["events"][:-1]  # all but the error event itself
    assert events[-1]["kind"] == "error" and events[-1]["data"]["status"] == 502
    assert "end" not in [e["kind"] for e in events]
    # Output reached the client, so the job is charged (an estimate: the
    # provider never sent its final count).
    assert len(usage) == 1 and usage[0].usage.output_tokens > 0


async def test_a_stream_cut_before_message_stop_never_looks_complete(pool: ProviderPool) -> None:
    events, usage = await run_job(pool, job("truncate here please", stream=True))
    assert events[-1]["kind"] == "error" and events[-1]["data"]["status"] == 502
    assert "without message_stop" in events[-1]["data"]["message"]
    assert "end" not in [e["kind"] for e in events]
    assert len(usage) == 1
