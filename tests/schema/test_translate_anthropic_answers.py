"""OpenAI chat completions <-> Anthropic Messages: whole answers, streams and
usage, in both directions; round trips; and what we produce parses with the
official SDKs' own types and stream accumulators. Requests are in
``test_translate_anthropic.py``."""

from __future__ import annotations

import itertools
import json
from typing import Any

import anthropic.types as anthropic_types
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from schema.errors import UpstreamError
from schema.jobs import Usage
from schema.translate import response_usage, stream_translator, translate_response, usage_meter
from schema.translate.anthropic import (
    StreamFromOpenAI,
    StreamToOpenAI,
    UsageMeter,
    response_from_openai,
    response_to_openai,
)
from tests.schema.test_translate_anthropic import CALL, MODEL, STREAM_EVENT, TOOL_USE, blocks

# --- whole answers ----------------------------------------------------------------------------

def anthropic_message(*content: dict[str, Any], stop_reason: str = "end_turn", **usage: int) -> dict[str, Any]:
    return {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-upstream-id",
            "content": list(content), "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5, **usage}}


def completion(message: dict[str, Any], finish_reason: str = "stop", **usage: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-upstream-id",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason,
                         "logprobs": None}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, **usage}}


@pytest.mark.parametrize(("stop_reason", "finish_reason"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter"), ("pause_turn", "stop"), ("model_context_window_exceeded", "length"),
])
def test_response_to_openai_finish_reasons(stop_reason: str, finish_reason: str) -> None:
    body = response_to_openai(anthropic_message({"type": "text", "text": "Hi"}, stop_reason=stop_reason), model=MODEL)
    ChatCompletion.model_validate(body)
    assert body["choices"][0]["finish_reason"] == finish_reason


def test_response_to_openai_content_tools_thinking_usage() -> None:
    message = anthropic_message(
        {"type": "thinking", "thinking": "Paris first.", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Checking "}, {"type": "text", "text": "both."}, TOOL_USE,
        {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome", "days": [1, 2]}},
        stop_reason="tool_use", cache_creation_input_tokens=100, cache_read_input_tokens=1000,
    )
    body = response_to_openai(message, model=MODEL)
    parsed = ChatCompletion.model_validate(body)
    assert parsed.model == MODEL and parsed.id == "msg_01"
    reply = parsed.choices[0].message
    assert reply.content == "Checking both."
    assert body["choices"][0]["message"]["reasoning_content"] == "Paris first."
    assert [(call.id, call.function.name, json.loads(call.function.arguments)) for call in reply.tool_calls or []] == [
        ("call_1", "get_weather", {"city": "Paris"}), ("toolu_2", "get_weather", {"city": "Rome", "days": [1, 2]})]
    assert parsed.choices[0].finish_reason == "tool_calls"
    assert parsed.usage is not None
    assert (parsed.usage.prompt_tokens, parsed.usage.completion_tokens, parsed.usage.total_tokens) == (1110, 5, 1115)
    assert parsed.usage.prompt_tokens_details is not None
    assert parsed.usage.prompt_tokens_details.cached_tokens == 1000


def test_response_to_openai_refuses_what_chat_cannot_hold() -> None:
    message = anthropic_message({"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}})
    with pytest.raises(UpstreamError) as failed:
        response_to_openai(message, model=MODEL)
    assert failed.value.status == 502 and "server_tool_use" in failed.value.message


@pytest.mark.parametrize(("finish_reason", "stop_reason"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("function_call", "tool_use"),
    ("content_filter", "refusal"),
])
def test_response_from_openai_stop_reasons(finish_reason: str, stop_reason: str) -> None:
    message = response_from_openai(completion({"content": "Hi"}, finish_reason), model=MODEL)
    anthropic_types.Message.model_validate(message)
    assert message["stop_reason"] == stop_reason


def test_response_from_openai_content_tools_usage() -> None:
    body = completion(
        {"content": "Checking.", "reasoning_content": "hidden", "tool_calls": [
            CALL, {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]},
        "tool_calls", prompt_tokens=1110, total_tokens=1115,
        prompt_tokens_details={"cached_tokens": 1000, "cache_write_tokens": 100},
        completion_tokens_details={"reasoning_tokens": 2})
    message = anthropic_types.Message.model_validate(response_from_openai(body, model=MODEL))
    assert message.model == MODEL and message.id == "chatcmpl-1"
    assert blocks(message) == [
        {"type": "text", "text": "Checking."}, TOOL_USE,
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}}]
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens,
            message.usage.cache_creation_input_tokens, message.usage.output_tokens) == (10, 1000, 100, 5)
    assert response_usage(message.model_dump(), "anthropic") == Usage(input_tokens=1110, output_tokens=5)


def test_response_from_openai_refusal_and_tools_after_stop() -> None:
    refused = response_from_openai(completion({"content": None, "refusal": "I can't help with that."}), model=MODEL)
    assert refused["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert refused["stop_reason"] == "refusal"
    # Some OpenAI-compatible servers end tool calls with "stop"; an Anthropic client runs tools on "tool_use".
    tools = response_from_openai(completion({"content": None, "tool_calls": [CALL]}, "stop"), model=MODEL)
    assert tools["stop_reason"] == "tool_use"


@pytest.mark.parametrize("body", [
    pytest.param(completion({"tool_calls": [{**CALL, "function": {"name": "f", "arguments": "{broken"}}]}),
                 id="bad-args"),
    pytest.param({**completion({"content": "a"}), "choices": []}, id="no-choice"),
    pytest.param({**completion({"content": "a"}), "choices": completion({"content": "a"})["choices"] * 2}, id="two"),
])
def test_response_from_openai_fails_loudly(body: dict[str, Any]) -> None:
    with pytest.raises(UpstreamError) as failed:
        response_from_openai(body, model=MODEL)
    assert failed.value.status == 502


def test_answer_round_trips() -> None:
    message = anthropic_message({"type": "text", "text": "Here."}, TOOL_USE, stop_reason="tool_use",
                                cache_creation_input_tokens=3, cache_read_input_tokens=7)
    back = translate_response(translate_response(message, "anthropic", "openai", model=MODEL), "openai", "anthropic",
                              model=MODEL)
    assert back["content"] == message["content"]
    assert back["stop_reason"] == "tool_use"
    assert back["usage"] == {**message["usage"]}
    assert response_usage(back, "anthropic") == response_usage(message, "anthropic")

    body = completion({"content": "Here.", "tool_calls": [CALL]}, "tool_calls",
                      prompt_tokens_details={"cached_tokens": 4, "cache_write_tokens": 2})
    again = response_to_openai(response_from_openai(body, model=MODEL), model=MODEL)
    assert again["choices"][0]["message"]["content"] == "Here."
    assert [json.loads(call["function"]["arguments"]) for call in again["choices"][0]["message"]["tool_calls"]] == [
        {"city": "Paris"}]
    assert again["choices"][0]["finish_reason"] == "tool_calls"
    assert again["usage"] == body["usage"]


# --- streams ----------------------------------------------------------------------------------

def anthropic_stream(*, tool_fragments: list[str] | None = None, stop_reason: str = "tool_use",
                     thinking: bool = True) -> list[dict[str, Any]]:
    """A stream as Anthropic sends it: thinking, text, then a tool_use whose input arrives in fragments."""
    fragments = tool_fragments if tool_fragments is not None else ['{"city": ', '"Par', 'is"}']
    text, tool = (1, 2) if thinking else (0, 1)
    reasoning = [
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Use the tool."}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQB"}},
        {"type": "content_block_stop", "index": 0},
    ]
    return [
        {"type": "message_start", "message": {
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-upstream-id", "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 25, "output_tokens": 1, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 5}}},
        {"type": "ping"},
        *(reasoning if thinking else []),
        {"type": "content_block_start", "index": text, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": text, "delta": {"type": "text_delta", "text": "Let me "}},
        {"type": "content_block_delta", "index": text, "delta": {"type": "text_delta", "text": "check."}},
        {"type": "content_block_stop", "index": text},
        {"type": "content_block_start", "index": tool, "content_block": {
            "type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": tool, "delta": {"type": "input_json_delta", "partial_json": ""}},
        *({"type": "content_block_delta", "index": tool,
           "delta": {"type": "input_json_delta", "partial_json": fragment}}
          for fragment in fragments),
        {"type": "content_block_stop", "index": tool},
        {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
         "usage": {"output_tokens": 42}},
        {"type": "message_stop"},
    ]


def openai_stream(*, calls: list[tuple[str, str, list[str]]] | None = None, text: list[str] | None = None,
                  finish_reason: str = "tool_calls", usage: bool = True) -> list[dict[str, Any]]:
    """A stream as OpenAI sends it with ``include_usage``: role, text, tool calls in fragments, finish, usage."""
    base = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-upstream-id"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
    chunks += [chunk({"content": piece}) for piece in (text if text is not None else ["Let me ", "check."])]
    for position, (call_id, name, fragments) in enumerate(calls if calls is not None else [
            ("call_a", "get_weather", ['{"ci', 'ty": "Paris"}']), ("call_b", "get_weather", ['{"city": "Rome"}'])]):
        chunks.append(chunk({"tool_calls": [{"index": position, "id": call_id, "type": "function",
                                             "function": {"name": name, "arguments": ""}}]}))
        chunks += [chunk({"tool_calls": [{"index": position, "function": {"arguments": fragment}}]})
                   for fragment in fragments]
    chunks.append(chunk({}, finish_reason))
    if usage:
        chunks.append({**base, "choices": [], "usage": {
            "prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42,
            "prompt_tokens_details": {"cached_tokens": 5}}})
    return chunks


def run(translator: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = [translated for event in events for translated in translator.feed(event)]
    return out + translator.finish()


def accumulate_openai(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """What the official OpenAI SDK assembles from these chunks."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in chunks:
        list(state.handle_chunk(ChatCompletionChunk.model_validate(chunk)))
    final = state.get_final_completion()
    choice = final.choices[0]
    return {
        "content": choice.message.content,
        "tool_calls": [(call.id, call.function.name, json.loads(call.function.arguments))
                       for call in choice.message.tool_calls or []],
        "finish_reason": choice.finish_reason,
        "usage": final.usage.model_dump(exclude_none=True) if final.usage else None,
    }


def accumulate_anthropic(events: list[dict[str, Any]]) -> anthropic_types.Message:
    """What the official Anthropic SDK assembles from these events."""
    snapshot = None
    buffers: dict[int, bytes] = {}
    for event in events:
        if event["type"] == "ping":
            continue
        parsed = STREAM_EVENT.validate_python(event)
        snapshot = accumulate_event(event=parsed, current_snapshot=snapshot, json_bufs=buffers)
    assert snapshot is not None
    return anthropic_types.Message.model_validate(snapshot.model_dump())


def test_stream_to_openai() -> None:
    chunks = run(StreamToOpenAI(model=MODEL), anthropic_stream())
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert chunk["model"] == MODEL and chunk["id"] == "msg_01"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    assert "".join(delta.get("reasoning_content", "") for delta in deltas) == "Use the tool."
    starts = [delta["tool_calls"][0] for delta in deltas if delta.get("tool_calls") and "id" in delta["tool_calls"][0]]
    assert starts == [{"index": 0, "id": "toolu_01", "type": "function",
                       "function": {"name": "get_weather", "arguments": ""}}]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert accumulate_openai(chunks) == {
        "content": "Let me check.",
        "tool_calls": [("toolu_01", "get_weather", {"city": "Paris"})],
        "finish_reason": "tool_calls",
        "usage": {"prompt_tokens": 30, "completion_tokens": 42, "total_tokens": 72,
                  "prompt_tokens_details": {"cached_tokens": 5, "cache_write_tokens": 0}},
    }


def test_stream_to_openai_numbers_parallel_tool_calls() -> None:
    events = anthropic_stream()
    second = [
        {"type": "content_block_start", "index": 3, "content_block": {
            "type": "tool_use", "id": "toolu_02", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 3,
         "delta": {"type": "input_json_delta", "partial_json": '{"city":"Rome"}'}},
        {"type": "content_block_stop", "index": 3},
    ]
    events[-2:-2] = second
    assert accumulate_openai(run(StreamToOpenAI(model=MODEL), events))["tool_calls"] == [
        ("toolu_01", "get_weather", {"city": "Paris"}), ("toolu_02", "get_weather", {"city": "Rome"})]


@pytest.mark.parametrize(("error_type", "status"), [("overloaded_error", 502), ("rate_limit_error", 429),
                                                    ("api_error", 502)])
def test_stream_to_openai_error_event(error_type: str, status: int) -> None:
    translator = StreamToOpenAI(model=MODEL)
    translator.feed(anthropic_stream()[0])
    with pytest.raises(UpstreamError) as failed:
        translator.feed({"type": "error", "error": {"type": error_type, "message": "Overloaded"}})
    assert failed.value.status == status and failed.value.message == "Overloaded"


def test_stream_to_openai_cut_short_is_an_error() -> None:
    translator = StreamToOpenAI(model=MODEL)
    for event in anthropic_stream()[:9]:
        translator.feed(event)
    with pytest.raises(UpstreamError):
        translator.finish()


def test_stream_to_openai_usage_at_finish_without_message_stop() -> None:
    chunks = run(StreamToOpenAI(model=MODEL), anthropic_stream()[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 42


def test_stream_from_openai() -> None:
    translator = StreamFromOpenAI(model=MODEL)
    chunks = openai_stream()
    held = [translated for chunk in chunks[:-1] for translated in translator.feed(chunk)]
    assert held[0]["type"] == "message_start" and held[0]["message"]["model"] == MODEL
    # OpenAI's usage comes after the finish reason: the end waits for it.
    assert held[-1] == {"type": "content_block_stop", "index": 2}
    events = held + translator.feed(chunks[-1]) + translator.finish()
    # Like Anthropic's own streams, a ping follows message_start (the SDK's
    # event union leaves pings out: it skips them before parsing).
    assert held[1] == {"type": "ping"} and [event["type"] for event in events].count("ping") == 1
    for event in events:
        if event["type"] != "ping":
            STREAM_EVENT.validate_python(event)
    assert [event["type"] for event in events[-2:]] == ["message_delta", "message_stop"]
    starts = [(event["index"], event["content_block"]["type"])
              for event in events if event["type"] == "content_block_start"]
    assert starts == [(0, "text"), (1, "tool_use"), (2, "tool_use")]
    stops = [event["index"] for event in events if event["type"] == "content_block_stop"]
    assert stops == [0, 1, 2]
    message = accumulate_anthropic(events)
    assert blocks(message) == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_b", "name": "get_weather", "input": {"city": "Rome"}}]
    assert message.stop_reason == "tool_use"
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (25, 5, 12)


def test_stream_from_openai_without_usage_chunk_ends_at_finish() -> None:
    translator = StreamFromOpenAI(model=MODEL)
    chunks = openai_stream(calls=[], finish_reason="length", usage=False)
    fed = [event for chunk in chunks for event in translator.feed(chunk)]
    assert fed[-1]["type"] == "content_block_stop"
    tail = translator.finish()
    assert [event["type"] for event in tail] == ["message_delta", "message_stop"]
    assert tail[0]["delta"]["stop_reason"] == "max_tokens"
    assert blocks(accumulate_anthropic(fed + tail)) == [{"type": "text", "text": "Let me check."}]


def test_stream_from_openai_usage_with_finish_ends_at_once() -> None:
    chunks = openai_stream(calls=[], finish_reason="stop", usage=False)
    chunks[-1]["usage"] = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    translator = StreamFromOpenAI(model=MODEL)
    events = [event for chunk in chunks for event in translator.feed(chunk)]
    assert events[-1] == {"type": "message_stop"}
    assert events[-2]["usage"]["output_tokens"] == 2 and events[-2]["delta"]["stop_reason"] == "end_turn"
    assert translator.finish() == []


def test_stream_from_openai_refusal() -> None:
    chunks = openai_stream(calls=[], text=[], finish_reason="stop")
    chunks.insert(1, {**chunks[1], "choices": [{"index": 0, "delta": {"refusal": "I can't."}, "finish_reason": None}]})
    message = accumulate_anthropic(run(StreamFromOpenAI(model=MODEL), chunks))
    assert message.stop_reason == "refusal"
    assert message.content[0].model_dump(exclude_none=True) == {"type": "text", "text": "I can't."}


@pytest.mark.parametrize("chunks", [
    pytest.param(openai_stream(calls=[("call_a", "f", ["{not json"])]), id="arguments-not-json"),
    pytest.param(openai_stream(calls=[("call_a", "f", ["[1]"])]), id="arguments-not-object"),
    pytest.param(openai_stream(usage=False)[:-1], id="no-finish-reason"),
    pytest.param([], id="empty"),
])
def test_stream_from_openai_broken_upstream(chunks: list[dict[str, Any]]) -> None:
    with pytest.raises(UpstreamError) as failed:
        run(StreamFromOpenAI(model=MODEL), chunks)
    assert failed.value.status == 502


@pytest.mark.parametrize(("first", "late"), [(['{"a":'], "1}"), (['{"a":1}'], " ")])
def test_stream_from_openai_interleaved_arguments_fail_loudly(first: list[str], late: str) -> None:
    """Anthropic streams one block at a time: arguments for a call whose block
    was closed cannot be expressed, and must not be lost quietly."""
    chunks = openai_stream(calls=[("call_a", "f", first), ("call_b", "g", ["{}"])])
    delta = {"tool_calls": [{"index": 0, "function": {"arguments": late}}]}
    chunks.insert(-2, {**chunks[1], "choices": [{"index": 0, "finish_reason": None, "delta": delta}]})
    with pytest.raises(UpstreamError) as failed:
        run(StreamFromOpenAI(model=MODEL), chunks)
    assert failed.value.status == 502


def test_stream_round_trip_from_openai() -> None:
    """OpenAI chunks -> Anthropic events -> OpenAI chunks: what the SDK assembles is the same."""
    chunks = openai_stream()
    chunks[-1]["usage"]["prompt_tokens_details"]["cache_write_tokens"] = 3
    chained = stream_translator("openai", "anthropic", model=MODEL)
    back = run(StreamToOpenAI(model=MODEL), run(chained, chunks))
    assert accumulate_openai(back) == accumulate_openai(chunks)


def test_stream_round_trip_from_anthropic() -> None:
    events = anthropic_stream(thinking=False)  # thinking is not sent to Anthropic clients, who never asked for it
    back = run(StreamFromOpenAI(model=MODEL), run(stream_translator("anthropic", "openai", model=MODEL), events))
    original, again = accumulate_anthropic(events), accumulate_anthropic(back)
    assert blocks(again) == blocks(original)
    assert again.stop_reason == original.stop_reason
    assert again.usage.model_dump(exclude_none=True) == original.usage.model_dump(exclude_none=True)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({0, len(text), *(cut % (len(text) + 1) for cut in cuts)})
    return [text[start:end] for start, end in itertools.pairwise(points) if end > start]


@settings(max_examples=150, deadline=None)
@given(arguments=st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5), cuts=st.lists(st.integers(0, 10_000)))
def test_streamed_tool_arguments_arrive_intact(arguments: dict[str, Any], cuts: list[int]) -> None:
    text = json.dumps(arguments, ensure_ascii=False)
    fragments = split(text, cuts)

    from_openai = run(StreamFromOpenAI(model=MODEL), openai_stream(calls=[("call_x", "tool", fragments)], text=[]))
    partial = "".join(event["delta"]["partial_json"] for event in from_openai
                      if event["type"] == "content_block_delta" and event["delta"]["type"] == "input_json_delta")
    assert partial == text
    assert accumulate_anthropic(from_openai).content[0].model_dump(exclude_none=True)["input"] == arguments

    to_openai = run(StreamToOpenAI(model=MODEL), anthropic_stream(tool_fragments=fragments))
    joined = "".join(call["function"].get("arguments", "") for chunk in to_openai for choice in chunk["choices"]
                     for call in choice["delta"].get("tool_calls", ()))
    assert joined == text
    assert accumulate_openai(to_openai)["tool_calls"] == [("toolu_01", "get_weather", arguments)]


# --- usage ------------------------------------------------------------------------------------

def test_response_usage_adds_cache_tokens() -> None:
    message = anthropic_message({"type": "text", "text": "Hi"}, cache_creation_input_tokens=100,
                                cache_read_input_tokens=1000)
    assert response_usage(message, "anthropic") == Usage(input_tokens=1110, output_tokens=5, reported=True)
    assert response_usage({**message, "usage": {"input_tokens": "ten", "output_tokens": 1}}, "anthropic") is None
    assert response_usage({**message, "usage": None}, "anthropic") is None


def test_usage_meter_reads_the_stream() -> None:
    meter = usage_meter("anthropic")
    assert isinstance(meter, UsageMeter)
    events = anthropic_stream()
    meter.feed(events[0])
    assert meter.usage == Usage(input_tokens=30, output_tokens=1)  # known at once, should the stream break later
    for event in events[1:]:
        meter.feed(event)
    assert meter.usage == Usage(input_tokens=30, output_tokens=42)
    assert meter.output_chars == len("Use the tool.") + len("Let me check.") + len('{"city": "Paris"}')


def test_usage_meter_takes_cumulative_input_from_message_delta() -> None:
    meter = UsageMeter()
    events = anthropic_stream()
    events[-2]["usage"] = {"input_tokens": 40, "cache_read_input_tokens": 5, "output_tokens": 42}
    for event in events:
        meter.feed(event)
    assert meter.usage == Usage(input_tokens=45, output_tokens=42)


def test_usage_meter_without_usage() -> None:
    meter = UsageMeter()
    meter.feed({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "abc"}})
    assert meter.usage is None and meter.output_chars == 3


