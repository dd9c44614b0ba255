"""Locust users for chat traffic against the gateway's public HTTP API.

``ChatUser`` sends JSON ``/v1/chat/completions``; ``StreamingChatUser`` sends
``"stream": true`` and reads the server-sent events to ``data: [DONE]``,
reporting the whole stream as one request and the time to the first content
token as a custom ``TTFT`` event, so both show up in locust's statistics.

    GATEWAYZ_API_KEY=gz-... locust -f loadtests/locustfile.py --host http://127.0.0.1:8000

Environment: ``GATEWAYZ_API_KEY`` (required), ``GATEWAYZ_MODEL`` (default
``mock/echo``), ``GATEWAYZ_PROMPT`` (the user message; default a short
sentence; against the fake upstream ``words:20`` asks for 20 words).
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
from locust import HttpUser, between, task

CHAT_PATH = "/v1/chat/completions"
DEFAULT_MODEL = "mock/echo"
DEFAULT_PROMPT = "Say hello to the load test"


def _headers() -> dict[str, str]:
    key = os.environ.get("GATEWAYZ_API_KEY")
    if not key:
        raise RuntimeError("set GATEWAYZ_API_KEY to a gateway API key (gatewayz keys create --name load --credits 100)")
    return {"authorization": f"Bearer {key}", "content-type": "application/json"}


def _body(stream: bool) -> bytes:
    model = os.environ.get("GATEWAYZ_MODEL", DEFAULT_MODEL)
    prompt = os.environ.get("GATEWAYZ_PROMPT", DEFAULT_PROMPT)
    return orjson.dumps({"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]})


def _has_content(chunk: Any) -> bool:
    return isinstance(chunk, dict) and any(
        (choice.get("delta") or {}).get("content") for choice in chunk.get("choices") or ()
    )


class ChatUser(HttpUser):
    """A client waiting for whole JSON answers."""

    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        self.headers = _headers()
        self.body = _body(stream=False)

    @task
    def chat(self) -> None:
        with self.client.post(
            CHAT_PATH, data=self.body, headers=self.headers, name="chat", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            try:
                content = response.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                response.failure("the body is not a chat completion")
                return
            if not content:
                response.failure("empty answer")


class StreamingChatUser(HttpUser):
    """A client reading a streamed answer to its end."""

    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        self.headers = _headers()
        self.body = _body(stream=True)

    @task
    def chat_stream(self) -> None:
        start = time.perf_counter()
        first_token: float | None = None
        with self.client.post(
            CHAT_PATH, data=self.body, headers=self.headers, name="chat stream", stream=True, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            done = False
            problem: str | None = None
            received = 0
            # Read to the end of the body, past [DONE], so the connection goes back to the pool.
            for raw in response.iter_lines():
                received += len(raw)
                line = raw.decode() if isinstance(raw, bytes) else raw
                if done or problem or not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    continue
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    problem = f"a malformed event: {data[:100]}"
                    continue
                if isinstance(chunk, dict) and "error" in chunk:
                    problem = f"error event: {chunk['error']}"
                elif first_token is None and _has_content(chunk):
                    first_token = time.perf_counter() - start
            if problem is None and not done:
                problem = "the stream ended without data: [DONE]"
            elif problem is None and first_token is None:
                problem = "the stream carried no content"
            response.request_meta["response_length"] = received
            if problem:
                response.failure(problem)
            else:
                # locust times a streamed response to its headers; count the whole stream instead.
                response.request_meta["response_time"] = (time.perf_counter() - start) * 1000
                response.success()
        if first_token is not None:
            self.environment.events.request.fire(
                request_type="TTFT",
                name="chat stream",
                response_time=first_token * 1000,
                response_length=0,
                exception=None,
                context={},
            )
