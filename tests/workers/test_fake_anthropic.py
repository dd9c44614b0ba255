"""The fake Anthropic API speaks the real protocol: the official ``anthropic``
SDK reads its messages, streams, model list and errors, and it refuses what
the real API refuses. Tests that trust the fake rest on these."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import httpx
import pytest

from tests.conftest import ANTHROPIC_KEY
from tests.support.fake_anthropic import TOOL_INPUT, FakeAnthropic

MODEL = "claude-fake-small"


@pytest.fixture
async def sdk(fake_anthropic: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=fake_anthropic.url, api_key=ANTHROPIC_KEY, max_retries=0)
    yield client
    await client.close()


async def test_the_sdk_reads_a_message(sdk: anthropic.AsyncAnthropic) -> None:
    message = await sdk.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "hello"}])
    assert message.content[0].type == "text" and message.content[0].text == "Echo: hello"
    assert (message.stop_reason, message.usage.input_tokens, message.usage.output_tokens) == ("end_turn", 1, 2)


async def test_the_sdk_reads_a_text_stream(sdk: anthropic.AsyncAnthropic) -> None:
    async with sdk.messages.stream(model=MODEL, max_tokens=50,
                                   messages=[{"role": "user", "content": "stream these words"}]) as stream:
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert texts == ["Echo:", " stream", " these", " words"]
    assert final.content[0].type == "text" and final.content[0].text == "Echo: stream these words"
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == ("end_turn", 3, 4)


async def test_the_sdk_reads_a_streamed_tool_use(sdk: anthropic.AsyncAnthropic) -> None:
    tools: list[anthropic.types.ToolParam] = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    async with sdk.messages.stream(model=MODEL, max_tokens=50, tools=tools,
                                   messages=[{"role": "user", "content": "tool now"}]) as stream:
        final = await stream.get_final_message()
    block = final.content[0]
    assert block.type == "tool_use" and (block.name, block.input) == ("get_weather", TOOL_INPUT)
    assert final.stop_reason == "tool_use"


async def test_the_sdk_reads_the_model_list(sdk: anthropic.AsyncAnthropic) -> None:
    page = await sdk.models.list()
    assert [(m.id, m.type) for m in page.data] == [("claude-fake-small", "model"), ("claude-fake-large", "model")]
    assert page.has_more is False


def anthropic_type(status: int) -> str:
    return {400: "invalid_request_error", 429: "rate_limit_error", 529: "overloaded_error", 500: "api_error"}[status]


@pytest.mark.parametrize(("status", "error_class"), [
    (400, anthropic.BadRequestError),
    (429, anthropic.RateLimitError),
    (529, anthropic.OverloadedError),
    (500, anthropic.InternalServerError),
])
async def test_the_sdk_reads_its_errors(sdk: anthropic.AsyncAnthropic, status: int,
                                        error_class: type[anthropic.APIStatusError]) -> None:
    with pytest.raises(error_class) as raised:
        await sdk.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": f"fail:{status}"}])
    assert raised.value.status_code == status
    assert raised.value.body == {"type": "error",
                                 "error": {"type": anthropic_type(status), "message": f"fake failure {status}"}}
    assert raised.value.response.headers.get("retry-after") == ("7" if status in (429, 529) else None)


async def test_an_error_event_mid_stream_reaches_the_sdk(sdk: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.APIStatusError) as raised:
        async with sdk.messages.stream(model=MODEL, max_tokens=50,
                                       messages=[{"role": "user", "content": "error:overloaded_error now"}]) as stream:
            await stream.get_final_message()
    assert "overloaded_error" in str(raised.value)



@pytest.mark.parametrize(("headers", "status", "kind", "message"), [
    ({"anthropic-version": "2023-06-01"}, 401, "authentication_error", "x-api-key header is required"),
    ({"anthropic-version": "2023-06-01", "x-api-key": "sk-ant-wrong"}, 401, "authentication_error",
     "invalid x-api-key"),
    ({"x-api-key": ANTHROPIC_KEY}, 400, "invalid_request_error", "anthropic-version: header is required"),
])
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/models"])
async def test_it_refuses_what_the_real_api_refuses(fake_anthropic: FakeAnthropic, headers: dict[str, str],
                                                    status: int, kind: str, message: str, path: str) -> None:
    body = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=fake_anthropic.url) as client:
        if path == "/v1/messages":
            response = await client.post(path, json=body, headers=headers)
        else:
            response = await client.get(path, headers=headers)
    assert response.status_code == status
    assert response.json() == {"type": "error", "error": {"type": kind, "message": message}}


@pytest.mark.parametrize(("body", "message"), [
    ({"max_tokens": 10, "messages": []}, "model: Field required"),
    ({"model": MODEL, "messages": []}, "max_tokens: Field required"),
    ({"model": MODEL, "max_tokens": 10}, "messages: Field required"),
])
async def test_it_refuses_a_body_without_a_required_field(fake_anthropic: FakeAnthropic, body: dict[str, object],
                                                          message: str) -> None:
    async with httpx.AsyncClient(base_url=fake_anthropic.url) as client:
        response = await client.post("/v1/messages", json=body,
                                     headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"})
    assert response.status_code == 400
    assert response.json()["error"] == {"type": "invalid_request_error", "message": message}
