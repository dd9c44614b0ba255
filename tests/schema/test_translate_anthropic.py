"""OpenAI chat completions <-> Anthropic Messages requests: each mapping and
refusal both ways, round trips, and malformed input as a 400 (answers, streams
and usage are in ``test_translate_anthropic_answers.py``)."""

from __future__ import annotations

import copy
from typing import Any

import anthropic.types as anthropic_types
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from schema.translate import DEFAULT_MAX_TOKENS, Untranslatable, translate_request
from schema.translate.anthropic import request_from_openai, request_to_openai

MODEL = "claude-test"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
STREAM_EVENT = TypeAdapter(anthropic_types.RawMessageStreamEvent)


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def chat(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"messages": list(messages), **fields}


def messages_request(*messages: dict[str, Any], max_tokens: int = 100, **fields: Any) -> dict[str, Any]:
    return {"messages": list(messages), "max_tokens": max_tokens, **fields}


def blocks(message: anthropic_types.Message) -> list[dict[str, Any]]:
    return [block.model_dump(exclude_none=True) for block in message.content]


# --- requests: OpenAI -> Anthropic ------------------------------------------------------------

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
TOOL_USE = {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}

FROM_OPENAI = [
    pytest.param(chat(user("Hi")), messages_request(user("Hi"), max_tokens=DEFAULT_MAX_TOKENS),
                 id="minimal-default-max"),
    pytest.param(chat({"role": "system", "content": "Be brief."}, user("Hi"), max_tokens=50),
                 messages_request(user("Hi"), max_tokens=50, system="Be brief."), id="system-string"),
    pytest.param(
        chat({"role": "developer", "content": [{"type": "text", "text": "Rule 1"}, {"type": "text", "text": "Rule 2"}]},
             {"role": "system", "content": "Rule 3"}, user("Hi"), max_tokens=50),
        messages_request(user("Hi"), max_tokens=50,
                         system=[{"type": "text", "text": t} for t in ("Rule 1", "Rule 2", "Rule 3")]),
        id="developer-and-system-parts"),
    pytest.param(chat(user("Hi"), {"role": "system", "content": "Later rule"}, max_tokens=50),
                 messages_request(user("Hi"), max_tokens=50, system="Later rule"), id="system-hoisted"),
    pytest.param(
        chat(user("one"), user([{"type": "text", "text": "two"}]), {"role": "assistant", "content": "a"},
             {"role": "assistant", "content": "b"}, max_tokens=50),
        messages_request(user([{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]),
                         {"role": "assistant",
                          "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                         max_tokens=50),
        id="consecutive-turns-merged"),
    pytest.param(
        chat(user([{"type": "text", "text": "What is this?"},
                   {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"}},
                   {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                   {"type": "image_url", "image_url": {"url": f"data:image/jpg;base64,{PNG}"}}]), max_tokens=50),
        messages_request(user([{"type": "text", "text": "What is this?"},
                               {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                               {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                               {"type": "image",
                                "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG}}]),
                         max_tokens=50),
        id="images-base64-url-jpg"),
    pytest.param(
        chat(user("Weather in Paris and Rome?"),
             {"role": "assistant", "content": "Checking.", "tool_calls": [
                 CALL, {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]},
             {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
             {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
             user("Thanks, and tomorrow?"), tools=[WEATHER], max_tokens=50),
        messages_request(
            user("Weather in Paris and Rome?"),
            {"role": "assistant",
             "content": [{"type": "text", "text": "Checking."}, TOOL_USE,
                         {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}}]},
            user([{"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                  {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
                  {"type": "text", "text": "Thanks, and tomorrow?"}]),
            tools=[WEATHER_TOOL], max_tokens=50),
        id="tool-calls-and-grouped-results"),
    pytest.param(chat(user("Hi"), tools=[WEATHER], tool_choice="auto", max_tokens=50),
                 messages_request(user("Hi"), tools=[WEATHER_TOOL], tool_choice={"type": "auto"}, max_tokens=50),
                 id="tool-choice-auto"),
    pytest.param(chat(user("Hi"), tools=[WEATHER], tool_choice="required", max_tokens=50),
                 messages_request(user("Hi"), tools=[WEATHER_TOOL], tool_choice={"type": "any"}, max_tokens=50),
                 id="tool-choice-required"),
    pytest.param(chat(user("Hi"), tools=[WEATHER], tool_choice="none", parallel_tool_calls=False, max_tokens=50),
                 messages_request(user("Hi"), tools=[WEATHER_TOOL], tool_choice={"type": "none"}, max_tokens=50),
                 id="tool-choice-none"),
    pytest.param(
        chat(user("Hi"), tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
             parallel_tool_calls=False, max_tokens=50),
        messages_request(user("Hi"), tools=[WEATHER_TOOL], max_tokens=50,
                         tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}),
        id="tool-choice-named-not-parallel"),
    pytest.param(chat(user("Hi"), tools=[WEATHER], parallel_tool_calls=False, max_tokens=50),
                 messages_request(user("Hi"), tools=[WEATHER_TOOL], max_tokens=50,
                                  tool_choice={"type": "auto", "disable_parallel_tool_use": True}),
                 id="not-parallel-alone"),
    pytest.param(
        chat(user("Hi"), tools=[{"type": "function", "function": {"name": "ping", "strict": True}}], max_tokens=50),
        messages_request(user("Hi"), tools=[{"name": "ping", "input_schema": {"type": "object", "properties": {}},
                                             "strict": True}], max_tokens=50),
        id="tool-without-parameters"),
    pytest.param(chat(user("Hi"), stop="END", temperature=0.2, top_p=0.9, max_completion_tokens=10, max_tokens=99),
                 messages_request(user("Hi"), stop_sequences=["END"], temperature=0.2, top_p=0.9, max_tokens=10),
                 id="sampling-stop-string-max-completion-first"),
    pytest.param(chat(user("Hi"), stop=["END", "\n\nHuman:"], max_tokens=50),
                 messages_request(user("Hi"), stop_sequences=["END", "\n\nHuman:"], max_tokens=50), id="stop-list"),
    pytest.param(chat(user("Hi"), user="u-1", max_tokens=50),
                 messages_request(user("Hi"), metadata={"user_id": "u-1"}, max_tokens=50), id="user"),
    pytest.param(chat(user("Hi"), user="u-1", safety_identifier="s-1", max_tokens=50),
                 messages_request(user("Hi"), metadata={"user_id": "s-1"}, max_tokens=50), id="safety-identifier"),
    pytest.param(
        chat(user("Hi"), {"role": "assistant", "content": "Hello.", "refusal": None, "audio": None,
                          "function_call": None, "tool_calls": None, "annotations": [],
                          "reasoning_content": "Greet back."},
             user("Bye"), max_tokens=50),
        messages_request(user("Hi"), {"role": "assistant", "content": "Hello."}, user("Bye"), max_tokens=50),
        id="echoed-sdk-answer"),
    pytest.param(
        chat(user("Hi"), max_tokens=50, store=True, metadata={"tag": "x"}, stream_options={"include_usage": True},
             seed=7, service_tier="auto", prompt_cache_key="k", n=1, logprobs=False, presence_penalty=0,
             frequency_penalty=0, response_format={"type": "text"}, logit_bias={}, modalities=["text"],
             temperature=None, tools=None, tool_choice=None, stop=None),
        messages_request(user("Hi"), max_tokens=50),
        id="hints-and-neutral-values"),
]


@pytest.mark.parametrize(("openai", "anthropic"), FROM_OPENAI)
def test_request_from_openai(openai: dict[str, Any], anthropic: dict[str, Any]) -> None:
    original = copy.deepcopy(openai)
    assert request_from_openai(openai) == anthropic
    assert openai == original  # the job's payload is not touched: a failover translates it again


def refusal(param: str, patch: dict[str, Any] | None = None, *messages: dict[str, Any]) -> Any:
    return pytest.param({"messages": list(messages) or [user("Hi")], **(patch or {})}, param, id=param)


OPENAI_REFUSALS = [
    refusal("n", {"n": 2}),
    refusal("logprobs", {"logprobs": True}),
    refusal("top_logprobs", {"top_logprobs": 3}),
    refusal("logit_bias", {"logit_bias": {"50256": -100}}),
    refusal("presence_penalty", {"presence_penalty": 0.5}),
    refusal("frequency_penalty", {"frequency_penalty": 0.5}),
    refusal("response_format", {"response_format": {"type": "json_object"}}),
    refusal("audio", {"audio": {"voice": "alloy", "format": "mp3"}}),
    refusal("modalities", {"modalities": ["text", "audio"]}),
    refusal("functions", {"functions": [WEATHER["function"]]}),
    refusal("function_call", {"function_call": "auto"}),
    refusal("reasoning_effort", {"reasoning_effort": "high"}),
    refusal("verbosity", {"verbosity": "low"}),
    refusal("web_search_options", {"web_search_options": {}}),
    refusal("invented_field", {"invented_field": 1}),
    refusal("temperature", {"temperature": 1.5}),
    refusal("top_p", {"top_p": 2}),
    refusal("max_tokens", {"max_tokens": 0}),
    refusal("stop", {"stop": ["\n"]}),
    refusal("stop", {"stop": 5}),
    refusal("tools.0.type", {"tools": [{"type": "custom", "custom": {"name": "x"}}]}),
    refusal("tools.0.function.parameters", {"tools": [{"type": "function", "function": {
        "name": "x", "parameters": {"type": "array"}}}]}),
    refusal("tool_choice", {"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}),
    refusal("tool_choice", {"tool_choice": "required"}),
    refusal("messages.0.name", None, {"role": "user", "content": "Hi", "name": "alice"}),
    refusal("messages.0.role", None, {"role": "function", "name": "f", "content": "x"}),
    refusal("messages.0.content.0.type", None,
            user([{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}])),
    refusal("messages.0.content.0.type", None, user([{"type": "file", "file": {"file_id": "f"}}])),
    refusal("messages.0.content.0.image_url.url", None,
            user([{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}])),
    refusal("messages.0.content.0.image_url.url", None,
            user([{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}])),
    refusal("messages.0.content.0.image_url.url", None,
            user([{"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}}])),
    refusal("messages.1.tool_calls.0.function.arguments", None, user("Hi"),
            {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "[1, 2]"}}]}),
    refusal("messages.1.tool_calls.0.function.arguments", None, user("Hi"),
            {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "{not json"}}]}),
    refusal("messages.1.refusal", None, user("Hi"), {"role": "assistant", "content": None, "refusal": "No."}),
    refusal("messages.0.content", None, user(42)),
    refusal("messages.0.mood", None, {"role": "user", "content": "Hi", "mood": "happy"}),
    refusal("messages.0.content.0.image_url.crop", None,
            user([{"type": "image_url", "image_url": {"url": "https://x/y.png", "crop": [0, 0, 5, 5]}}])),
    refusal("messages.1.tool_calls.0.function.thoughts", None, user("Hi"),
            {"role": "assistant", "tool_calls": [{**CALL, "function": {**CALL["function"], "thoughts": "x"}}]}),
    refusal("tools.0.function.examples",
            {"tools": [{**WEATHER, "function": {**WEATHER["function"], "examples": [1]}}]}),
    refusal("messages.0", None, "just a string"),  # type: ignore[arg-type]
    refusal("messages", {"messages": "Hi"}),
]


@pytest.mark.parametrize(("payload", "param"), OPENAI_REFUSALS)
def test_request_from_openai_refuses(payload: dict[str, Any], param: str) -> None:
    with pytest.raises(Untranslatable) as refused:
        request_from_openai(payload)
    assert refused.value.status == 400
    assert refused.value.param == param
    assert f"`{param}`" in refused.value.message


# --- requests: Anthropic -> OpenAI ------------------------------------------------------------

TO_OPENAI = [
    pytest.param(messages_request(user("Hi")), chat(user("Hi"), max_tokens=100), id="minimal"),
    pytest.param(messages_request(user("Hi"), system="Be brief."),
                 chat({"role": "system", "content": "Be brief."}, user("Hi"), max_tokens=100), id="system-string"),
    pytest.param(
        messages_request(user("Hi"), system=[{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
                                             {"type": "text", "text": "B"}]),
        chat({"role": "system", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]}, user("Hi"),
             max_tokens=100),
        id="system-blocks-cache-control-dropped"),
    pytest.param(
        messages_request(user([{"type": "text", "text": "What is this?"},
                               {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                               {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}])),
        chat(user([{"type": "text", "text": "What is this?"},
                   {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                   {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]), max_tokens=100),
        id="images"),
    pytest.param(
        messages_request(
            user("Weather?"),
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Let me look.", "signature": "sig"},
                {"type": "text", "text": "Checking."}, TOOL_USE]},
            user([{"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                  {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
                  {"type": "tool_result", "tool_use_id": "call_3"},
                  {"type": "text", "text": "And tomorrow?"}]),
            tools=[WEATHER_TOOL]),
        chat(user("Weather?"),
             {"role": "assistant", "content": "Checking.", "tool_calls": [
                 {**CALL, "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
             {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
             {"role": "tool", "tool_call_id": "call_2", "content": "21C"},
             {"role": "tool", "tool_call_id": "call_3", "content": ""},
             user("And tomorrow?"), tools=[WEATHER], max_tokens=100),
        id="tool-use-and-results"),
    pytest.param(
        messages_request(user("Hi"), {"role": "assistant", "content": [
            {**TOOL_USE, "caller": {"type": "direct"}, "cache_control": None}]}),
        chat(user("Hi"), {"role": "assistant", "content": None, "tool_calls": [
            {**CALL, "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}, max_tokens=100),
        id="echoed-sdk-tool-use"),
    pytest.param(
        messages_request(user([{"type": "tool_result", "tool_use_id": "call_1", "content": "18C"}])),
        chat({"role": "tool", "tool_call_id": "call_1", "content": "18C"}, max_tokens=100),
        id="results-only-turn"),
    pytest.param(
        messages_request(user("Hi"), {"role": "assistant", "content": [TOOL_USE]}),
        chat(user("Hi"), {"role": "assistant", "content": None, "tool_calls": [
            {**CALL, "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}, max_tokens=100),
        id="tool-use-alone"),
    pytest.param(messages_request(user("Hi"), tools=[WEATHER_TOOL], tool_choice={"type": "any"}),
                 chat(user("Hi"), tools=[WEATHER], tool_choice="required", max_tokens=100), id="tool-choice-any"),
    pytest.param(messages_request(user("Hi"), tools=[WEATHER_TOOL], tool_choice={"type": "none"}),
                 chat(user("Hi"), tools=[WEATHER], tool_choice="none", max_tokens=100), id="tool-choice-none"),
    pytest.param(
        messages_request(user("Hi"), tools=[{**WEATHER_TOOL, "cache_control": {"type": "ephemeral"}, "type": "custom"}],
                         tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}),
        chat(user("Hi"), tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
             parallel_tool_calls=False, max_tokens=100),
        id="tool-choice-named-not-parallel"),
    pytest.param(
        messages_request(user("Hi"), tools=[WEATHER_TOOL],
                         tool_choice={"type": "auto", "disable_parallel_tool_use": True}),
        chat(user("Hi"), tools=[WEATHER], tool_choice="auto", parallel_tool_calls=False, max_tokens=100),
        id="tool-choice-auto-not-parallel"),
    pytest.param(
        messages_request(user("Hi"), stop_sequences=["END"], temperature=0.3, top_p=0.8, metadata={"user_id": "u-1"},
                         cache_control={"type": "ephemeral"}, service_tier="auto", thinking={"type": "disabled"}),
        chat(user("Hi"), max_tokens=100, stop=["END"], temperature=0.3, top_p=0.8, user="u-1"),
        id="sampling-stop-metadata-hints"),
]


@pytest.mark.parametrize(("anthropic", "openai"), TO_OPENAI)
def test_request_to_openai(anthropic: dict[str, Any], openai: dict[str, Any]) -> None:
    original = copy.deepcopy(anthropic)
    assert request_to_openai(anthropic) == openai
    assert anthropic == original


def anthropic_refusal(param: str, patch: dict[str, Any] | None = None, *messages: dict[str, Any]) -> Any:
    return pytest.param(messages_request(*(messages or [user("Hi")]), **(patch or {})), param, id=param)


ANTHROPIC_REFUSALS = [
    anthropic_refusal("top_k", {"top_k": 5}),
    anthropic_refusal("thinking", {"thinking": {"type": "enabled", "budget_tokens": 2048}}),
    anthropic_refusal("output_config", {"output_config": {"effort": "low"}}),
    anthropic_refusal("container", {"container": "c-1"}),
    anthropic_refusal("mcp_servers", {"mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}]}),
    anthropic_refusal("inference_geo", {"inference_geo": "us"}),
    anthropic_refusal("invented_field", {"invented_field": True}),
    anthropic_refusal("temperature", {"temperature": 1.5}),
    anthropic_refusal("metadata.session", {"metadata": {"user_id": "u", "session": "s"}}),
    anthropic_refusal("stop_sequences", {"stop_sequences": "END"}),
    anthropic_refusal("tools.0.type", {"tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
    anthropic_refusal("tools.0.input_examples", {"tools": [{**WEATHER_TOOL, "input_examples": [{"city": "Oslo"}]}]}),
    anthropic_refusal("tool_choice", {"tool_choice": {"type": "any"}}),
    anthropic_refusal("messages.0.content.0.type", None,
                      user([{"type": "document",
                             "source": {"type": "text", "media_type": "text/plain", "data": "x"}}])),
    anthropic_refusal("messages.0.content.0.source.type", None,
                      user([{"type": "image", "source": {"type": "file", "file_id": "file_1"}}])),
    anthropic_refusal("messages.0.content.0.citations", None,
                      user([{"type": "text", "text": "x", "citations": [{"type": "char_location"}]}])),
    anthropic_refusal("messages.1.content.0.content.0.type", None, user("Hi"),
                      user([{"type": "tool_result", "tool_use_id": "t", "content": [
                          {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}])),
    anthropic_refusal("messages.1.content.0.is_error", None, user("Hi"),
                      user([{"type": "tool_result", "tool_use_id": "t", "content": "boom", "is_error": True}])),
    anthropic_refusal("messages.0.content.0.type", None, user([TOOL_USE])),
    anthropic_refusal("messages.1.content.0.type", None, user("Hi"),
                      {"role": "assistant", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search",
                                                         "input": {}}]}),
    anthropic_refusal("messages.0.role", None, {"role": "system", "content": "x"}),
    anthropic_refusal("messages.0.mood", None, {"role": "user", "content": "x", "mood": "happy"}),
    anthropic_refusal("messages.0.content.0.title", None, user([{"type": "text", "text": "x", "title": "T"}])),
    anthropic_refusal("messages.1.content.0.caller", None, user("Hi"), {"role": "assistant", "content": [
        {**TOOL_USE, "caller": {"type": "code_execution_20250825", "tool_id": "srvtoolu_1"}}]}),
    anthropic_refusal("tool_choice.reason", {"tools": [WEATHER_TOOL], "tool_choice": {"type": "any", "reason": "x"}}),
]


@pytest.mark.parametrize(("payload", "param"), ANTHROPIC_REFUSALS)
def test_request_to_openai_refuses(payload: dict[str, Any], param: str) -> None:
    with pytest.raises(Untranslatable) as refused:
        request_to_openai(payload)
    assert refused.value.status == 400
    assert refused.value.param == param
    assert f"`{param}`" in refused.value.message


def test_request_round_trip_from_anthropic_is_identity() -> None:
    """What an Anthropic client sends comes back unchanged after a trip through OpenAI's shapes."""
    original = messages_request(
        user([{"type": "text", "text": "Weather here?"},
              {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]),
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, TOOL_USE]},
        user([{"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
              {"type": "text", "text": "Tomorrow?"}]),
        system="Be brief.", stop_sequences=["END"], temperature=0.5, top_p=0.9, metadata={"user_id": "u"},
        tools=[WEATHER_TOOL], tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    assert request_from_openai(request_to_openai(original)) == original


def test_request_round_trip_from_openai_keeps_meaning() -> None:
    original = chat(
        {"role": "system", "content": "Be brief."},
        user([{"type": "text", "text": "Weather here?"},
              {"type": "image_url", "image_url": {"url": "https://example.com/sky.png"}}]),
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {**CALL, "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        user("Tomorrow?"),
        tools=[WEATHER], tool_choice="required", parallel_tool_calls=False, stop=["END"], temperature=0.5, top_p=0.9,
        max_completion_tokens=64, user="u",
    )
    back = request_to_openai(request_from_openai(original))
    expected = {key: value for key, value in original.items() if key != "max_completion_tokens"}
    assert back == {**expected, "max_tokens": 64}  # OpenAI-compatible servers all read max_tokens


def test_dispatch_through_schema_translate() -> None:
    payload = chat(user("Hi"), temperature=0.1)
    assert translate_request(payload, "openai", "anthropic") == request_from_openai(payload)
    assert translate_request(payload, "openai", "openai") is payload
    anthropic_payload = messages_request(user("Hi"))
    assert translate_request(anthropic_payload, "anthropic", "openai") == request_to_openai(anthropic_payload)
    with pytest.raises(Untranslatable):
        translate_request(chat(user("Hi"), n=3), "openai", "anthropic")


# --- bad input is a 400, whatever its shape ----------------------------------------------------

LEAVES = st.none() | st.booleans() | st.integers(-2, 3) | st.floats(allow_nan=False) | st.sampled_from(
    ["", "x", "auto", "none", "required", "any", "function", "text", "image_url", "image", "tool", "tool_use",
     "tool_result", "user", "assistant", "system", "base64", "url", "{}", "data:image/png;base64,AA", "https://x/y.png"])
FIELDS = st.sampled_from(["role", "content", "type", "text", "image_url", "url", "source", "media_type", "data",
                          "tool_calls", "id", "function", "name", "arguments", "tool_call_id", "parameters", "input",
                          "tool_use_id", "is_error", "input_schema", "citations", "refusal", "user_id"])
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(FIELDS, inner, max_size=4),
                      max_leaves=12)
BLOCKS = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "image", "tool_result", "tool_use", "thinking", "video"])},
    optional={name: VALUES
              for name in ("text", "image_url", "source", "content", "id", "name", "input", "tool_use_id")})
MESSAGES = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "developer", "tool", "robot"])},
    optional={"content": st.one_of(LEAVES, st.lists(st.one_of(BLOCKS, VALUES), max_size=3)),
              "tool_calls": VALUES, "tool_call_id": LEAVES}), max_size=4)


@settings(max_examples=300, deadline=None)
@given(messages=MESSAGES, tools=st.lists(VALUES, max_size=2), choice=VALUES,
       extra=st.dictionaries(st.sampled_from(["max_tokens", "temperature", "top_p", "stop", "stop_sequences", "system",
                                              "metadata", "user", "parallel_tool_calls", "n"]), VALUES, max_size=3))
def test_malformed_requests_get_a_400_never_a_crash(messages: list[Any], tools: list[Any], choice: Any,
                                                     extra: dict[str, Any]) -> None:
    payload = {"messages": messages, "tools": tools, "tool_choice": choice, **extra}
    for translate in (request_from_openai, request_to_openai):
        try:
            translate(payload)
        except Untranslatable as refused:
            assert refused.status == 400 and refused.param
