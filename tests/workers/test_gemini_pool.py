"""Jobs served by a Gemini provider, through the pool runtime on in-process
transports: the request reaches Gemini translated, the client gets chunks
(or a completion) its SDK accepts, in OpenAI's dialect or, through OpenAI's
shapes, Anthropic's; a tool call made by Gemini goes back to Gemini with its
signature on the next turn; and the job is charged the usage Gemini
reported."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import anthropic.types
import orjson
import pydantic
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import SecretStr

from schema.catalog import ProviderSpec
from schema.jobs import Job, Price, Route, StreamEvent, Usage
from tests.conftest import GEMINI_KEY
from tests.support.fake_gemini import THOUGHT_SIGNATURE, THOUGHT_TOKENS, TOOL_ARGS, FakeGemini
from tests.support.pools import memory_pool, run_job
from workers.adapters.gemini import GeminiAdapter
from workers.pool import ProviderPool

UPSTREAM_MODEL = "gemini-fake-flash"
STREAM_EVENT = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture
async def pool(fake_gemini: FakeGemini) -> AsyncIterator[ProviderPool]:
    provider = ProviderSpec(name="gemini", adapter="gemini", base_url=f"{fake_gemini.url}/v1beta",
                            api_key=SecretStr(GEMINI_KEY))
    adapter = GeminiAdapter(provider, connect_timeout=5)
    yield memory_pool(provider, adapter)
    await adapter.aclose()


def job(messages: list[dict[str, Any]] | str, *, stream: bool, **fields: Any) -> Job:
    if isinstance(messages, str):
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": messages}]
    return Job(account_id=1, key_id=1, model="gemini-client", routes=[Route(provider="gemini",
               upstream_model=UPSTREAM_MODEL)], payload={"messages": messages, **fields}, stream=stream,
               deadline=time.time() + 60, price=Price(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2)))


def chunks_of(events: list[StreamEvent]) -> list[dict[str, Any]]:
    chunks = [e["data"] for e in events if e["kind"] == "chunk"]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    return chunks


def sent(fake: FakeGemini) -> dict[str, Any]:
    return orjson.loads(fake.requests[-1]["body"])


async def test_a_job_without_streaming_answers_an_openai_completion(pool: ProviderPool,
                                                                    fake_gemini: FakeGemini) -> None:
    item = job("hello there you", stream=False, max_tokens=20, temperature=0.2)
    events, usage = await run_job(pool, item)
    assert sent(fake_gemini) == {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "hello there you"}]}],
        "generationConfig": {"maxOutputTokens": 20, "temperature": 0.2}}
    assert [e["kind"] for e in events] == ["response"]
    completion = ChatCompletion.model_validate(events[0]["data"])
    assert completion.model == "gemini-client" and completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content == "Echo: hello there you"
    # input: "Be brief." and "hello there you" are 5 words; output: "Echo: hello there you", 4.
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 4)
    assert [(u.job_id, u.provider, u.usage) for u in usage] == [(item.id, "gemini",
                                                                 Usage(input_tokens=5, output_tokens=4))]


async def test_a_streamed_job_answers_openai_chunks(pool: ProviderPool) -> None:
    events, usage = await run_job(pool, job("one two three", stream=True))
    chunks = chunks_of(events)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == \
        "Echo: one two three"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    assert events[-1]["kind"] == "end"
    assert Usage.model_validate(events[-1]["data"]["usage"]) == Usage(input_tokens=5, output_tokens=4, reported=True)
    assert [u.usage for u in usage] == [Usage(input_tokens=5, output_tokens=4)]


async def test_a_tool_call_goes_back_to_gemini_with_its_signature(pool: ProviderPool, fake_gemini: FakeGemini) -> None:
    """Turn one: Gemini calls a function, streamed to the client as one whole
    tool call. Turn two: the client sends the call back with its result, as
    OpenAI clients do; Gemini gets the call with its thought signature (or it
    would refuse the turn, as Gemini 3 does) and the result under its name."""
    question = [{"role": "user", "content": "tool: the weather in Paris?"}]
    events, usage = await run_job(pool, job(question, stream=True, tools=[WEATHER], tool_choice="auto"))
    assert sent(fake_gemini)["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "parametersJsonSchema": WEATHER["function"]["parameters"]}]}]
    chunks = chunks_of(events)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    [call] = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert (call["index"], call["function"]["name"]) == (0, "get_weather")
    assert orjson.loads(call["function"]["arguments"]) == TOOL_ARGS
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == THOUGHT_TOKENS
    assert [u.usage.output_tokens for u in usage] == [len(TOOL_ARGS) + THOUGHT_TOKENS]

    follow_up = [*question,
                 {"role": "assistant", "content": None, "tool_calls": [
                     {"id": call["id"], "type": "function", "function": call["function"]}]},
                 {"role": "tool", "tool_call_id": call["id"], "content": '{"sky": "clear", "celsius": 21}'}]
    events, usage = await run_job(pool, job(follow_up, stream=False, tools=[WEATHER]))
    assert fake_gemini.requests[-1]["status"] == 200
    assert sent(fake_gemini)["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": TOOL_ARGS},
                                     "thoughtSignature": THOUGHT_SIGNATURE}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                                                         "response": {"sky": "clear", "celsius": 21}}}]}]
    completion = ChatCompletion.model_validate(events[0]["data"])
    assert completion.choices[0].finish_reason == "stop" and len(usage) == 1


async def test_an_image_and_a_blocked_prompt(pool: ProviderPool, fake_gemini: FakeGemini) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    message = {"role": "user", "content": [{"type": "text", "text": "block this"}, image]}
    events, usage = await run_job(pool, job([message], stream=False))
    assert sent(fake_gemini)["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png",
                                                                           "data": "iVBORw0KGgo="}}
    completion = ChatCompletion.model_validate(events[0]["data"])
    assert (completion.choices[0].finish_reason, completion.choices[0].message.content) == ("content_filter", None)
    assert [u.usage for u in usage] == [Usage(input_tokens=2, output_tokens=0)]


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_what_gemini_cannot_take_is_a_400_and_free(pool: ProviderPool, fake_gemini: FakeGemini,
                                                         stream: bool) -> None:
    before = len(fake_gemini.requests)
    events, usage = await run_job(pool, job("hi", stream=stream, logit_bias={"50256": -100}))
    assert [e["kind"] for e in events] == ["error"]
    assert events[0]["data"]["status"] == 400 and "`logit_bias`" in events[0]["data"]["message"]
    assert len(fake_gemini.requests) == before  # nothing reached Gemini
    assert [u.usage for u in usage] == [Usage(input_tokens=0, output_tokens=0)]


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_a_refusal_before_any_output_is_an_error_and_free(pool: ProviderPool, stream: bool) -> None:
    events, usage = await run_job(pool, job("fail:429", stream=stream))
    assert [e["kind"] for e in events] == ["error"]
    assert (events[0]["data"]["status"], events[0]["data"]["retry_after"]) == (429, 7)
    assert [u.usage for u in usage] == [Usage(input_tokens=0, output_tokens=0)]


async def test_a_cut_stream_never_looks_complete_and_charges_what_went_out(pool: ProviderPool) -> None:
    events, usage = await run_job(pool, job("truncate here please", stream=True))
    chunks = chunks_of(events)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Echo: truncate"
    assert events[-1]["kind"] == "error" and events[-1]["data"]["status"] == 502
    assert "ended the stream before it finished" in events[-1]["data"]["message"]
    assert "end" not in [e["kind"] for e in events]
    # Output reached the client, so the job is charged: an estimate, since
    # the stream broke before Gemini's final count.
    assert len(usage) == 1 and usage[0].usage.output_tokens > 0 and not usage[0].usage.reported


# Anthropic-dialect jobs meet Gemini through OpenAI's shapes.


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_an_anthropic_job_served_by_gemini(pool: ProviderPool, fake_gemini: FakeGemini, stream: bool) -> None:
    item = job([{"role": "user", "content": [{"type": "text", "text": "hello there"}]}], stream=stream,
               max_tokens=50, system="Be brief.").model_copy(update={"dialect": "anthropic"})
    events, usage = await run_job(pool, item)
    assert sent(fake_gemini)["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent(fake_gemini)["contents"] == [{"role": "user", "parts": [{"text": "hello there"}]}]
    if stream:
        data = [e["data"] for e in events if e["kind"] == "chunk"]
        assert [event["type"] for event in data].count("ping") == 1  # the SDK skips pings before parsing
        for event in data:
            if event["type"] != "ping":
                STREAM_EVENT.validate_python(event)
        assert data[0]["type"] == "message_start" and data[-1]["type"] == "message_stop"
        text = "".join(e["delta"].get("text", "") for e in data if e["type"] == "content_block_delta")
    else:
        message = anthropic.types.Message.model_validate(events[0]["data"])
        text = "".join(block.text for block in message.content if block.type == "text")
    assert text == "Echo: hello there"
    assert [u.usage for u in usage] == [Usage(input_tokens=4, output_tokens=3)]


async def test_an_anthropic_tool_use_goes_back_to_gemini_with_its_signature(pool: ProviderPool,
                                                                            fake_gemini: FakeGemini) -> None:
    tools = [{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}]
    question = [{"role": "user", "content": "tool: the weather in Paris?"}]
    events, _ = await run_job(pool, job(question, stream=False, max_tokens=50, tools=tools)
                          .model_copy(update={"dialect": "anthropic"}))
    message = anthropic.types.Message.model_validate(events[0]["data"])
    [tool_use] = [block for block in message.content if block.type == "tool_use"]
    assert (tool_use.name, tool_use.input, message.stop_reason) == ("get_weather", TOOL_ARGS, "tool_use")

    follow_up = [*question, {"role": "assistant", "content": [tool_use.model_dump()]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny"}]}]
    events, _ = await run_job(pool, job(follow_up, stream=False, max_tokens=50, tools=tools)
                          .model_copy(update={"dialect": "anthropic"}))
    assert fake_gemini.requests[-1]["status"] == 200
    assert sent(fake_gemini)["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": TOOL_ARGS},
                                     "thoughtSignature": THOUGHT_SIGNATURE}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}}]}]
    assert anthropic.types.Message.model_validate(events[0]["data"]).stop_reason == "end_turn"
