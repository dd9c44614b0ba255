"""The fake Gemini API refuses what Google refuses, so the adapter and
translation tests that pass against it mean something."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import GEMINI_KEY
from tests.support.fake_gemini import THOUGHT_SIGNATURE, FakeGemini

GENERATE = "/v1beta/models/gemini-fake-flash:generateContent"


@pytest.fixture
async def client(fake_gemini: FakeGemini) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake_gemini.url, headers={"x-goog-api-key": GEMINI_KEY}) as client:
        yield client


def said(text: str, **fields: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **fields}


@pytest.mark.parametrize(("body", "message"), [
    (said("hi", model="gemini-fake-flash"), 'Unknown name "model"'),
    (said("hi", stream=True), 'Unknown name "stream"'),
    (said("hi", generationConfig={"max_tokens": 5}), 'Unknown name "max_tokens"'),
    ({"contents": []}, "contents is not specified"),
    ({"contents": [{"role": "assistant", "parts": [{"text": "hi"}]}]}, "valid role"),
    ({"contents": [{"role": "user", "parts": []}]}, "must not be empty"),
    ({"contents": [{"role": "user", "parts": [{"text": "a", "inlineData": {}}]}]}, "oneof field 'data'"),
    ({"contents": [{"role": "user", "parts": [{"text": "hi"}]},
                   {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}]}, "thought_signature"),
])
async def test_what_google_refuses(client: httpx.AsyncClient, body: dict[str, Any], message: str) -> None:
    response = await client.post(GENERATE, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and message in error["message"]


async def test_a_signed_call_is_accepted(client: httpx.AsyncClient) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]},
                         {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}},
                                                      "thoughtSignature": THOUGHT_SIGNATURE}]},
                         {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"a": 1}}}]}]}
    response = await client.post(GENERATE, json=body)
    assert response.status_code == 200 and response.json()["candidates"][0]["finishReason"] == "STOP"


async def test_models_in_googles_list_shape(client: httpx.AsyncClient, fake_gemini: FakeGemini) -> None:
    response = await client.get("/v1beta/models")
    models = response.json()["models"]
    assert [m["name"] for m in models] == ["models/gemini-fake-flash", "models/gemini-fake-pro"]
    assert all("generateContent" in m["supportedGenerationMethods"] and m["outputTokenLimit"] > 0 for m in models)
    async with httpx.AsyncClient(base_url=fake_gemini.url) as anonymous:
        refused = await anonymous.get("/v1beta/models")
    assert refused.status_code == 403 and refused.json()["error"]["status"] == "PERMISSION_DENIED"


async def test_a_stream_without_sse_is_one_json_array(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1beta/models/gemini-fake-flash:streamGenerateContent", json=said("a b"))
    events = response.json()
    assert isinstance(events, list) and len(events) == 3 and events[-1]["candidates"][0]["finishReason"] == "STOP"


async def test_sse_events_are_crlf_framed(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1beta/models/gemini-fake-flash:streamGenerateContent", params={"alt": "sse"},
                                 json=said("a"))
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("data: {") and response.text.count("\r\n\r\n") == 2


async def test_max_output_tokens_cuts_the_answer(client: httpx.AsyncClient) -> None:
    response = await client.post(GENERATE, json=said("one two three", generationConfig={"maxOutputTokens": 2,
                                                                                        "candidateCount": 2}))
    candidates = response.json()["candidates"]
    assert [c["content"]["parts"][0]["text"] for c in candidates] == ["Echo: one", "Echo: one"]
    assert [c["finishReason"] for c in candidates] == ["MAX_TOKENS", "MAX_TOKENS"]
    assert [c.get("index") for c in candidates] == [None, 1]  # Google leaves out an index of 0
