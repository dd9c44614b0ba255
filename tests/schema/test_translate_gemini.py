"""OpenAI <-> Gemini translation: what a Gemini model is asked for each
OpenAI request, the 400 (naming the field) for what Gemini cannot be asked,
and what an OpenAI client gets back for each Gemini answer and stream,
checked against the official SDK's types; tool calls round-trip with their
arguments and thought signatures intact."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from schema.jobs import Usage
from schema.translate import (
    Untranslatable,
    response_usage,
    stream_translator,
    translate_request,
    translate_response,
    usage_meter,
)
from schema.translate.gemini_request import UNSIGNED_CALL

MODEL = "gemini-client-id"
SIGNATURE = base64.b64encode(b"\xfb\xff\xbf signed thought \xfe\xff").decode()  # holds `+` and `/`
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
WEATHER_DECLARATION = {"name": "get_weather", "description": "The weather in a city",
                       "parametersJsonSchema": WEATHER["function"]["parameters"]}


def to_gemini(payload: dict[str, Any]) -> dict[str, Any]:
    return translate_request(payload, "openai", "gemini")


def to_openai(body: dict[str, Any]) -> dict[str, Any]:
    completion = translate_response(body, "gemini", "openai", model=MODEL)
    ChatCompletion.model_validate(completion)
    return completion


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def text(value: str) -> dict[str, str]:
    return {"text": value}


def call(call_id: str, name: str = "get_weather", arguments: str = '{"city": "Paris"}') -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# Requests: table-driven, OpenAI request -> the GenerateContentRequest sent.

REQUESTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("a user message", {"messages": [user("Hi")]},
     {"contents": [{"role": "user", "parts": [text("Hi")]}]}),
    ("system and developer messages become the system instruction, in order",
     {"messages": [{"role": "system", "content": "Be brief."}, user("Hi"),
                   {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]}]},
     {"systemInstruction": {"parts": [text("Be brief."), text("Answer in French.")]},
      "contents": [{"role": "user", "parts": [text("Hi")]}]}),
    ("multi-turn: assistant turns are the model's",
     {"messages": [user("Hi"), {"role": "assistant", "content": "Hello!"}, user("How are you?")]},
     {"contents": [{"role": "user", "parts": [text("Hi")]}, {"role": "model", "parts": [text("Hello!")]},
                   {"role": "user", "parts": [text("How are you?")]}]}),
    ("consecutive messages of one role are one turn; empty text is nothing",
     {"messages": [user("One"), user([{"type": "text", "text": "Two"}, {"type": "text", "text": ""}]),
                   {"role": "assistant", "content": ""}, user("Three")]},
     {"contents": [{"role": "user", "parts": [text("One"), text("Two"), text("Three")]}]}),
    ("a base64 image is inline data",
     {"messages": [user([{"type": "text", "text": "What is this?"},
                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                                             "detail": "high"}}])]},
     {"contents": [{"role": "user", "parts": [text("What is this?"),
                                              {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]}]}),
    ("an image URL is file data, typed by its extension",
     {"messages": [user([{"type": "image_url", "image_url": {"url": "https://example.com/cat.JPG?size=large"}},
                         {"type": "image_url", "image_url": "gs://bucket/dog.webp"}])]},
     {"contents": [{"role": "user", "parts": [
         {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.JPG?size=large"}},
         {"fileData": {"mimeType": "image/webp", "fileUri": "gs://bucket/dog.webp"}}]}]}),
    ("audio and files are inline data",
     {"messages": [user([{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                         {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=",
                                                   "filename": "a.pdf"}}])]},
     {"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                                              {"inlineData": {"mimeType": "application/pdf",
                                                              "data": "JVBERi0="}}]}]}),
    ("tools are function declarations; a function without parameters declares none",
     {"messages": [user("Weather?")],
      "tools": [WEATHER, {"type": "function", "function": {"name": "now", "parameters": {"type": "object",
                                                                                          "properties": {}}}}]},
     {"contents": [{"role": "user", "parts": [text("Weather?")]}],
      "tools": [{"functionDeclarations": [WEATHER_DECLARATION, {"name": "now"}]}],
      "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}}),
    ("generation settings",
     {"messages": [user("Hi")], "temperature": 0.3, "top_p": 0.9, "max_tokens": 50, "stop": "END", "n": 2,
      "seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.5, "top_k": 40},
     {"contents": [{"role": "user", "parts": [text("Hi")]}],
      "generationConfig": {"temperature": 0.3, "topP": 0.9, "maxOutputTokens": 50, "stopSequences": ["END"],
                           "candidateCount": 2, "seed": 7, "presencePenalty": 0.5, "frequencyPenalty": -0.5,
                           "topK": 40}}),
    ("max_completion_tokens wins over max_tokens; stop sequences as given",
     {"messages": [user("Hi")], "max_tokens": 50, "max_completion_tokens": 80, "stop": ["a", "b"]},
     {"contents": [{"role": "user", "parts": [text("Hi")]}],
      "generationConfig": {"maxOutputTokens": 80, "stopSequences": ["a", "b"]}}),
    ("JSON mode", {"messages": [user("Hi")], "response_format": {"type": "json_object"}},
     {"contents": [{"role": "user", "parts": [text("Hi")]}],
      "generationConfig": {"responseMimeType": "application/json"}}),
    ("a JSON schema",
     {"messages": [user("Hi")], "response_format": {"type": "json_schema", "json_schema": {
         "name": "answer", "strict": True, "schema": {"type": "object", "properties": {"n": {"type": "integer"}}}}}},
     {"contents": [{"role": "user", "parts": [text("Hi")]}],
      "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": {
          "type": "object", "properties": {"n": {"type": "integer"}}}}}),
    ("plain text format is the default", {"messages": [user("Hi")], "response_format": {"type": "text"}},
     {"contents": [{"role": "user", "parts": [text("Hi")]}]}),
    ("reasoning effort is a thinking budget", {"messages": [user("Hi")], "reasoning_effort": "medium"},
     {"contents": [{"role": "user", "parts": [text("Hi")]}],
      "generationConfig": {"thinkingConfig": {"thinkingBudget": 8192}}}),
    ("hints, defaults and nulls change nothing",
     {"messages": [user("Hi")], "user": "u-1", "metadata": {"a": "b"}, "store": False, "service_tier": "auto",
      "stream_options": {"include_usage": True}, "parallel_tool_calls": True, "logprobs": False,
      "modalities": ["text"], "temperature": None, "logit_bias": {}, "prompt_cache_key": "k",
      "safety_identifier": "s", "verbosity": "low"},
     {"contents": [{"role": "user", "parts": [text("Hi")]}]}),
]


@pytest.mark.parametrize(("payload", "expected"), [case[1:] for case in REQUESTS], ids=[case[0] for case in REQUESTS])
def test_requests(payload: dict[str, Any], expected: dict[str, Any]) -> None:
    assert to_gemini(payload) == expected


TOOL_CHOICES: list[tuple[Any, dict[str, Any], list[str]]] = [
    ("auto", {"mode": "AUTO"}, ["get_weather", "now"]),
    ("none", {"mode": "NONE"}, ["get_weather", "now"]),
    ("required", {"mode": "ANY"}, ["get_weather", "now"]),
    ({"type": "function", "function": {"name": "now"}}, {"mode": "ANY", "allowedFunctionNames": ["now"]},
     ["get_weather", "now"]),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "now"}}]}}, {"mode": "ANY", "allowedFunctionNames": ["now"]},
     ["get_weather", "now"]),
    # AUTO takes no names: the model is shown only the allowed functions.
    ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
        {"type": "function", "function": {"name": "now"}}]}}, {"mode": "AUTO"}, ["now"]),
]


@pytest.mark.parametrize(("choice", "config", "declared"), TOOL_CHOICES, ids=lambda value: orjson.dumps(value).decode())
def test_tool_choice(choice: Any, config: dict[str, Any], declared: list[str]) -> None:
    now = {"type": "function", "function": {"name": "now"}}
    request = to_gemini({"messages": [user("Weather?")], "tools": [WEATHER, now], "tool_choice": choice})
    assert request["toolConfig"] == {"functionCallingConfig": config}
    assert [d["name"] for d in request["tools"][0]["functionDeclarations"]] == declared


def test_strict_functions_ask_for_schema_checked_calls() -> None:
    strict = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    assert to_gemini({"messages": [user("Hi")], "tools": [strict]})["toolConfig"] == {
        "functionCallingConfig": {"mode": "VALIDATED"}}
    assert to_gemini({"messages": [user("Hi")], "tools": [strict], "tool_choice": "required"})["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY"}}


def test_tool_calls_and_results() -> None:
    """Parallel calls in one model turn, their results in one user turn, each
    named after the call it answers; an object result goes as it is, anything
    else wrapped; an unsigned turn gets Gemini's documented placeholder."""
    request = to_gemini({"messages": [
        user("Weather in Paris and Rome?"),
        {"role": "assistant", "content": "Checking.",
         "tool_calls": [call("call_1"), call("call_2", "get_time", '{"city": "Rome"}')]},
        {"role": "tool", "tool_call_id": "call_2", "content": "10:00"},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": '{"sky": "clear"}'}]},
        user("Thanks"),
    ], "tools": [WEATHER]})
    assert request["contents"] == [
        {"role": "user", "parts": [text("Weather in Paris and Rome?")]},
        {"role": "model", "parts": [
            text("Checking."),
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": UNSIGNED_CALL},
            {"functionCall": {"name": "get_time", "args": {"city": "Rome"}}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_time", "response": {"content": "10:00"}}},
            {"functionResponse": {"name": "get_weather", "response": {"sky": "clear"}}},
            text("Thanks")]},
    ]


def test_a_signed_call_id_gives_back_its_signature() -> None:
    signed = "call_0123456789abcdef01234567_ts_" + SIGNATURE.replace("+", "-").replace("/", "_").rstrip("=")
    request = to_gemini({"messages": [
        user("Weather?"), {"role": "assistant", "content": None, "tool_calls": [call(signed), call("call_plain")]},
        {"role": "tool", "tool_call_id": signed, "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_plain", "content": "rainy"}]})
    first, second = request["contents"][1]["parts"]
    assert first["thoughtSignature"] == SIGNATURE
    assert "thoughtSignature" not in second  # Gemini signs only the first of parallel calls


# Refusals: what Gemini cannot express is a 400 naming the field.

REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"web_search_options": {"search_context_size": "low"}}, "web_search_options"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"parallel_tool_calls": False, "tools": [WEATHER]}, "parallel_tool_calls"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"tools": [{"type": "custom", "custom": {"name": "grammar"}}]}, "tools.0.type"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools.0.function.name"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"stop": 5}, "stop"),
    ({"response_format": {"type": "grammar"}}, "response_format"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"temperature": "hot"}, "temperature"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"n": True}, "n"),
]


@pytest.mark.parametrize(("fields", "param"), REFUSALS, ids=[param for _, param in REFUSALS])
def test_refused_fields(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(Untranslatable) as refused:
        to_gemini({"messages": [user("Hi")], **fields})
    assert refused.value.status == 400 and refused.value.param == param
    assert refused.value.message.startswith(f"`{param}` cannot be sent to a Gemini model: ")


MESSAGE_REFUSALS: list[tuple[list[dict[str, Any]], str]] = [
    ([user([{"type": "image_url", "image_url": {"url": "https://example.com/picture"}}])],
     "messages.0.content.0.image_url.url"),
    ([user([{"type": "image_url", "image_url": {"url": "file:///etc/passwd.png"}}])],
     "messages.0.content.0.image_url.url"),
    ([user([{"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}])],
     "messages.0.content.0.image_url"),
    ([user([{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "flac"}}])],
     "messages.0.content.0.input_audio.format"),
    ([user([{"type": "file", "file": {"file_id": "file-abc"}}])], "messages.0.content.0.file.file_id"),
    ([user([{"type": "video_url", "video_url": {"url": "https://example.com/a.mp4"}}])], "messages.0.content.0"),
    ([user(42)], "messages.0.content"),
    ([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]},
      user("Hi")], "messages.0.content.0"),
    ([user("Hi"), {"role": "assistant", "tool_calls": [call("call_1", arguments="{not json")]}],
     "messages.1.tool_calls.0.function.arguments"),
    ([user("Hi"), {"role": "assistant", "tool_calls": [call("call_1", arguments="[1, 2]")]}],
     "messages.1.tool_calls.0.function.arguments"),
    ([user("Hi"), {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}],
     "messages.1.tool_calls.0.id"),
    ([user("Hi"), {"role": "tool", "tool_call_id": "call_unknown", "content": "42"}], "messages.1.tool_call_id"),
    ([user("Hi"), {"role": "function", "name": "f", "content": "42"}], "messages.1.role"),
    ([user("Hi"), {"role": "assistant", "audio": {"id": "audio_1"}}], "messages.1.audio"),
    ([{"role": "system", "content": "Only a system prompt."}], "messages"),
    ([], "messages"),
]


@pytest.mark.parametrize(("messages", "param"), MESSAGE_REFUSALS, ids=[param for _, param in MESSAGE_REFUSALS])
def test_refused_messages(messages: list[dict[str, Any]], param: str) -> None:
    with pytest.raises(Untranslatable) as refused:
        to_gemini({"messages": messages})
    assert refused.value.status == 400 and refused.value.param == param
    assert refused.value.message.startswith(f"`{param}` cannot be sent to a Gemini model: ")


# Answers: GenerateContentResponse -> chat.completion.


def candidate(parts: list[dict[str, Any]], finish: str | None = "STOP", **fields: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, **fields}
    if finish:
        found["finishReason"] = finish
    return found


def answer(*candidates: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"candidates": list(candidates), "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2,
                                                              "totalTokenCount": 6},
            "modelVersion": "gemini-2.5-flash", "responseId": "resp-1", **fields}


FINISHES = [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
            ("RECITATION", "content_filter"), ("BLOCKLIST", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"),
            ("SPII", "content_filter"), ("IMAGE_SAFETY", "content_filter"), ("LANGUAGE", "stop"), ("OTHER", "stop"),
            ("MALFORMED_FUNCTION_CALL", "stop")]


@pytest.mark.parametrize(("reason", "finish"), FINISHES)
def test_finish_reasons(reason: str, finish: str) -> None:
    completion = to_openai(answer(candidate([text("Hello")], reason)))
    assert completion["choices"][0]["finish_reason"] == finish


def test_a_text_answer() -> None:
    completion = to_openai(answer(candidate([text("Hello"), text(" there"), {"text": "(thinking)", "thought": True}])))
    assert completion["id"] == "chatcmpl-resp-1" and completion["model"] == MODEL
    assert completion["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello there",
                                                              "refusal": None},
                                      "logprobs": None, "finish_reason": "stop"}]
    assert completion["usage"]["prompt_tokens"] == 4 and completion["usage"]["completion_tokens"] == 2


def test_function_calls_are_tool_calls() -> None:
    completion = to_openai(answer(candidate([
        text("Let me look."),
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris", "days": [1, 2]}},
         "thoughtSignature": SIGNATURE},
        {"functionCall": {"name": "now"}}])))
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Let me look."
    first, second = choice["message"]["tool_calls"]
    assert first["id"].startswith("call_") and second["id"].startswith("call_") and first["id"] != second["id"]
    assert (first["function"]["name"], orjson.loads(first["function"]["arguments"])) == (
        "get_weather", {"city": "Paris", "days": [1, 2]})
    assert (second["function"]["name"], second["function"]["arguments"]) == ("now", "{}")


def test_a_blocked_prompt_is_filtered_with_no_content() -> None:
    completion = to_openai({"promptFeedback": {"blockReason": "SAFETY"},
                            "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}})
    assert completion["choices"] == [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": None},
                                      "logprobs": None, "finish_reason": "content_filter"}]
    assert completion["usage"]["prompt_tokens"] == 9 and completion["usage"]["completion_tokens"] == 0


def test_a_candidate_cut_for_safety_has_no_content() -> None:
    completion = to_openai(answer({"finishReason": "SAFETY", "safetyRatings": []}))
    assert completion["choices"][0]["message"]["content"] is None
    assert completion["choices"][0]["finish_reason"] == "content_filter"


def test_several_candidates_are_several_choices() -> None:
    completion = to_openai(answer(candidate([text("A")]), candidate([text("B")], "MAX_TOKENS", index=1)))
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in completion["choices"]] == [
        (0, "A", "stop"), (1, "B", "length")]


USAGE: list[tuple[dict[str, Any], tuple[int, int, int, int] | None]] = [
    ({"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}, (10, 5, 0, 0)),
    # Thinking is output; tool-use prompts and cached tokens are input.
    ({"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 3, "toolUsePromptTokenCount": 2,
      "cachedContentTokenCount": 4, "totalTokenCount": 20}, (12, 8, 4, 3)),
    ({"promptTokenCount": 7, "totalTokenCount": 7}, (7, 0, 0, 0)),  # Gemini leaves out counts of 0
    ({}, None),
    ({"promptTokenCount": -1}, None),
    ({"promptTokenCount": "10"}, None),
    ({"promptTokenCount": True}, None),
]


@pytest.mark.parametrize(("metadata", "expected"), USAGE, ids=lambda value: orjson.dumps(value).decode())
def test_usage(metadata: dict[str, Any], expected: tuple[int, int, int, int] | None) -> None:
    body = answer(candidate([text("Hi")]), usageMetadata=metadata)
    completion = to_openai(body)
    if expected is None:
        assert response_usage(body, "gemini") is None and "usage" not in completion
        return
    prompt, output, cached, thoughts = expected
    assert response_usage(body, "gemini") == Usage(input_tokens=prompt, output_tokens=output, reported=True)
    assert completion["usage"] == {"prompt_tokens": prompt, "completion_tokens": output,
                                   "total_tokens": prompt + output, "prompt_tokens_details": {"cached_tokens": cached},
                                   "completion_tokens_details": {"reasoning_tokens": thoughts}}


# Streams: streamGenerateContent events -> chat.completion.chunk objects.


def translate_stream(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    translator = stream_translator("gemini", "openai", model=MODEL)
    chunks = [chunk for event in events for chunk in translator.feed(event)] + translator.finish()
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    assert len({chunk["id"] for chunk in chunks}) <= 1  # one completion
    return chunks


def deltas(chunks: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any], str | None]]:
    return [(c["choices"][0]["index"], c["choices"][0]["delta"], c["choices"][0]["finish_reason"])
            for c in chunks if c["choices"]]


def event(*candidates: dict[str, Any], usage: dict[str, int] | None = None) -> dict[str, Any]:
    return {"candidates": list(candidates), "usageMetadata": usage or {"promptTokenCount": 4, "totalTokenCount": 4},
            "modelVersion": "gemini-2.5-flash", "responseId": "resp-2"}


def test_a_text_stream() -> None:
    chunks = translate_stream([
        event(candidate([text("Hel")], None)),
        event(candidate([text("lo"), {"text": "hmm", "thought": True}], None)),
        event(candidate([text("!")], "STOP"),
              usage={"promptTokenCount": 4, "candidatesTokenCount": 3, "thoughtsTokenCount": 1, "totalTokenCount": 8}),
    ])
    assert deltas(chunks) == [(0, {"role": "assistant", "content": ""}, None), (0, {"content": "Hel"}, None),
                              (0, {"content": "lo"}, None), (0, {"content": "!"}, None), (0, {}, "stop")]
    assert chunks[-1]["choices"] == [] and chunks[-1]["id"] == "chatcmpl-resp-2"
    assert chunks[-1]["usage"]["prompt_tokens"] == 4 and chunks[-1]["usage"]["completion_tokens"] == 4


def test_a_streamed_function_call_is_one_whole_tool_call_chunk() -> None:
    chunks = translate_stream([
        event(candidate([text("Looking.")], None)),
        event(candidate([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                          "thoughtSignature": SIGNATURE}], None)),
        event(candidate([{"functionCall": {"name": "now", "args": {}}}], "STOP")),
    ])
    calls = [delta["tool_calls"][0] for _, delta, _ in deltas(chunks) if "tool_calls" in delta]
    read = [(c["index"], c["type"], c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in calls]
    assert read == [
        (0, "function", "get_weather", {"city": "Paris"}), (1, "function", "now", {})]
    assert all(c["id"].startswith("call_") for c in calls)
    assert deltas(chunks)[-1] == (0, {}, "tool_calls")


def test_a_blocked_stream_ends_filtered() -> None:
    chunks = translate_stream([{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                                "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}}])
    assert deltas(chunks) == [(0, {"role": "assistant", "content": ""}, None), (0, {}, "content_filter")]
    assert chunks[-1]["usage"]["prompt_tokens"] == 5


def test_streamed_candidates_keep_their_indexes() -> None:
    chunks = translate_stream([
        event(candidate([text("A")], None), candidate([text("B")], None, index=1)),
        event(candidate([text(".")], "STOP"), candidate([text("!")], "MAX_TOKENS", index=1)),
    ])
    by_index = {index: [(d.get("content"), f) for i, d, f in deltas(chunks) if i == index] for index in (0, 1)}
    assert by_index == {0: [("", None), ("A", None), (".", None), (None, "stop")],
                        1: [("", None), ("B", None), ("!", None), (None, "length")]}


def test_a_stream_without_usage_ends_without_a_usage_chunk() -> None:
    chunks = translate_stream([{"candidates": [candidate([text("Hi")], "STOP")]}])
    assert all(chunk["choices"] for chunk in chunks)


def test_the_usage_meter_keeps_the_last_cumulative_usage() -> None:
    meter = usage_meter("gemini")
    meter.feed(event(candidate([text("Hello")], None)))
    meter.feed(event(candidate([{"functionCall": {"name": "now", "args": {}}}], "STOP"),
                     usage={"promptTokenCount": 4, "candidatesTokenCount": 6, "totalTokenCount": 10}))
    assert meter.usage == Usage(input_tokens=4, output_tokens=6, reported=True)
    assert meter.output_chars == len("Hello") + len(orjson.dumps({"name": "now", "args": {}}))


# Round trips: a call Gemini made comes back to it as it was made.

JSON_OBJECTS = st.dictionaries(st.text(min_size=1, max_size=8), st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8), max_size=4)


@settings(max_examples=60, deadline=None)
@given(args=JSON_OBJECTS, signature=st.binary(min_size=1, max_size=64), name=st.from_regex(r"[a-z_]{1,12}",
                                                                                          fullmatch=True))
def test_a_call_round_trips_with_its_arguments_and_signature(args: dict[str, Any], signature: bytes, name: str) -> None:
    signed = base64.b64encode(signature).decode()
    gemini_answer = answer(candidate([{"functionCall": {"name": name, "args": args}, "thoughtSignature": signed}]))
    tool_call = to_openai(gemini_answer)["choices"][0]["message"]["tool_calls"][0]
    chunks = translate_stream([event(gemini_answer["candidates"][0])])
    streamed_call = next(d["tool_calls"][0] for _, d, _ in deltas(chunks) if "tool_calls" in d)
    for made in (tool_call, streamed_call):
        follow_up = to_gemini({"messages": [
            user("Go"), {"role": "assistant", "content": None, "tool_calls": [
                {"id": made["id"], "type": "function", "function": made["function"]}]},
            {"role": "tool", "tool_call_id": made["id"], "content": '{"ok": true}'}]})
        model_turn, results = follow_up["contents"][1:]
        assert model_turn["parts"] == [{"functionCall": {"name": name, "args": args}, "thoughtSignature": signed}]
        assert results["parts"] == [{"functionResponse": {"name": name, "response": {"ok": True}}}]


def test_an_unsigned_call_round_trips_with_the_placeholder() -> None:
    made = to_openai(answer(candidate([{"functionCall": {"name": "now", "args": {}}}])))
    tool_call = made["choices"][0]["message"]["tool_calls"][0]
    assert "_ts_" not in tool_call["id"]
    follow_up = to_gemini({"messages": [user("Go"), made["choices"][0]["message"],
                                        {"role": "tool", "tool_call_id": tool_call["id"], "content": "12:00"}]})
    assert follow_up["contents"][1]["parts"] == [{"functionCall": {"name": "now", "args": {}},
                                                  "thoughtSignature": UNSIGNED_CALL}]


# Bad input: whatever a client sends, the answer is a translation or a 400,
# never another exception (the ingress translates before it admits a request).

LEAF = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=5)
    | st.sampled_from(["auto", "none", "required", "function", "{}", '{"a": 1}', "[1]", "http://[::1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["type", "url", "name"]), inner,
                                                               max_size=3),
    max_leaves=8)
CALL_IDS = st.sampled_from(["call_1", "call_2", "call_0123456789abcdef01234567_ts_AB-_"])


def shaped(required: dict[str, Any] | None = None, **optional: Any) -> st.SearchStrategy[dict[str, Any]]:
    """Objects of the right shape, their values now and then of the wrong one."""
    return st.fixed_dictionaries(required or {},
                                 optional={name: value | value | value | LEAF for name, value in optional.items()})


PART = shaped({"type": st.sampled_from(["text", "text", "image_url", "input_audio", "file", "refusal", "video"])},
              text=st.text(min_size=1, max_size=5), refusal=st.text(max_size=5),
              image_url=shaped(url=st.sampled_from(["https://a.b/c.png", "https://a.b/c", "gs://b/c.JPEG",
                                                    "data:image/png;base64,AA==", "data:x", "ftp://a/b.png"]),
                               detail=st.just("low")),
              input_audio=shaped(data=st.just("AA=="), format=st.sampled_from(["wav", "mp3", "flac"])),
              file=shaped(file_data=st.sampled_from(["data:application/pdf;base64,AA==", "data:"]),
                          file_id=st.just("file-1")))
CALL = shaped({"id": CALL_IDS}, type=st.sampled_from(["function", "custom"]),
              function=shaped(name=st.sampled_from(["f", "g"]),
                              arguments=st.sampled_from(["", "{}", '{"a": 1}', "[1]", "{bad"])))
ROLES = ["user"] * 6 + ["assistant"] * 3 + ["system", "developer", "tool", "tool", "function", "x"]
CONTENT = st.text(min_size=1, max_size=5) | st.lists(PART, min_size=1, max_size=3)
MESSAGE = shaped({"role": st.sampled_from(ROLES), "content": CONTENT | CONTENT | CONTENT | LEAF},
                 tool_calls=st.lists(CALL, max_size=2), tool_call_id=CALL_IDS, refusal=st.text(max_size=3))
TOOL = shaped({"type": st.sampled_from(["function", "custom"])},
              function=shaped(name=st.sampled_from(["f", "g"]), description=st.text(max_size=3), strict=st.booleans(),
                              parameters=st.just({"type": "object", "properties": {"a": {"type": "string"}}})))
REQUEST = shaped(
    tools=st.lists(TOOL, max_size=3),
    tool_choice=st.sampled_from(["auto", "none", "required", "any"])
    | shaped({"type": st.sampled_from(["function", "allowed_tools"])}, function=shaped(name=st.just("f")),
             allowed_tools=shaped(mode=st.sampled_from(["auto", "required", "x"]),
                                  tools=st.lists(shaped(function=shaped(name=st.just("f"))), max_size=2))),
    response_format=shaped({"type": st.sampled_from(["text", "json_object", "json_schema", "grammar"])},
                           json_schema=shaped(schema=st.just({"type": "object"}))),
    stop=st.lists(st.text(max_size=3), max_size=2), temperature=st.floats(0, 2), top_p=st.floats(0, 1),
    n=st.integers(1, 3), seed=st.integers(0, 9), max_tokens=st.integers(1, 9), max_completion_tokens=st.integers(1, 9),
    reasoning_effort=st.sampled_from(["low", "medium", "xhigh"]), user=st.just("u"))


@settings(max_examples=500, deadline=None)
@given(payload=REQUEST, messages=st.lists(MESSAGE, min_size=1, max_size=4))
def test_any_bad_request_is_a_400(payload: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    try:
        request = to_gemini({"messages": messages, **payload})
    except Untranslatable as refused:
        assert refused.status == 400 and refused.param
        assert refused.message.startswith(f"`{refused.param}` cannot be sent to a Gemini model: ")
        return
    assert request["contents"] and all(content["parts"] for content in request["contents"])
    orjson.dumps(request)


GEMINI_PART = shaped(text=st.text(max_size=4), thought=st.booleans(), thoughtSignature=st.just(SIGNATURE),
                     functionCall=shaped({"name": st.sampled_from(["f", "g"])}, args=st.just({"a": [1]})))
GEMINI_EVENT = shaped(
    candidates=st.lists(shaped(content=shaped(parts=st.lists(GEMINI_PART, max_size=3), role=st.just("model")),
                               finishReason=st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY", "OTHER", "NEW_REASON"]),
                               index=st.integers(0, 2)), max_size=2),
    promptFeedback=shaped(blockReason=st.just("SAFETY")),
    usageMetadata=shaped(promptTokenCount=st.integers(0, 9), candidatesTokenCount=st.integers(0, 9),
                         thoughtsTokenCount=st.integers(0, 9)),
    responseId=st.text(min_size=1, max_size=4))


@settings(max_examples=300, deadline=None)
@given(events=st.lists(GEMINI_EVENT, min_size=1, max_size=4))
def test_any_gemini_answer_reads_as_openai_types(events: list[dict[str, Any]]) -> None:
    """Whatever a provider sends, the client gets objects its SDK accepts
    (``to_openai`` and ``translate_stream`` validate them)."""
    to_openai(events[-1])
    translate_stream(events)
    meter = usage_meter("gemini")
    for event in events:
        meter.feed(event)
