"""The HTTP client every adapter shares, against real sockets on loopback:
a stream given up closes its upstream connection, and each way of not
getting an answer maps to its own error."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from loadtests.fake_upstream import FakeUpstream
from schema.catalog import ProviderSpec
from schema.errors import GatewayTimeout, ProviderUnavailable, UpstreamError
from tests.conftest import UPSTREAM_KEY
from workers.adapters.http import ProviderHTTP


def client(url: str, **overrides: Any) -> ProviderHTTP:
    spec = ProviderSpec(name="fake", adapter="openai", base_url=f"{url}/v1", api_key=SecretStr(UPSTREAM_KEY),
                        **overrides)
    return ProviderHTTP(spec, connect_timeout=5)


def stream_body(text: str) -> dict[str, Any]:
    return {"model": "fake-small", "stream": True, "messages": [{"role": "user", "content": text}]}


async def eventually(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting until {what}")


async def test_cancelling_the_reader_closes_the_upstream_connection(upstream: FakeUpstream) -> None:
    http = client(upstream.url)  # type: ignore[attr-defined]
    text = f"stall:2 {uuid.uuid4().hex}"
    seen: list[Any] = []

    async def read() -> None:
        async for _, data in http.events("/chat/completions", stream_body(text)):
            seen.append(data)

    reader = asyncio.create_task(read())
    try:
        await eventually(lambda: len(seen) >= 3, "the first events came")  # the role, "Echo:", then the stall
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        await eventually(lambda: text in upstream.left, "the upstream saw its client leave")
    finally:
        await http.aclose()


async def test_closing_the_events_early_closes_the_upstream_connection(upstream: FakeUpstream) -> None:
    http = client(upstream.url)  # type: ignore[attr-defined]
    text = f"stall:2 {uuid.uuid4().hex}"
    try:
        events = http.events("/chat/completions", stream_body(text))
        await anext(events)
        await events.aclose()
        await eventually(lambda: text in upstream.left, "the upstream saw its client leave")
        # The pool still serves: the closed connection was not handed back.
        answer = await http.post_json("/chat/completions", {"model": "fake-small",
                                                            "messages": [{"role": "user", "content": "hello"}]})
        assert answer["choices"][0]["message"]["content"] == "Echo: hello"
    finally:
        await http.aclose()


@pytest.fixture
def full_backlog() -> Iterator[str]:
    """A port whose listener accepts nothing and whose queue is full: a new
    connection is never accepted."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_a_provider_that_accepts_no_connection_in_time(full_backlog: str) -> None:
    http = client(full_backlog, connect_timeout=0.3)
    try:
        with pytest.raises(ProviderUnavailable) as raised:
            await http.post_json("/chat/completions", {"messages": []})
    finally:
        await http.aclose()
    assert raised.value.status == 504 and "did not accept a connection in time" in raised.value.message


async def test_a_provider_that_never_answers_times_out(upstream: FakeUpstream) -> None:
    http = client(upstream.url, timeout=0.3)  # type: ignore[attr-defined]
    try:
        with pytest.raises(GatewayTimeout):
            await http.post_json("/chat/completions", {"messages": [{"role": "user", "content": "hang"}]})
    finally:
        await http.aclose()


async def test_a_stream_cut_off_is_a_broken_connection(upstream: FakeUpstream) -> None:
    http = client(upstream.url)  # type: ignore[attr-defined]
    try:
        with pytest.raises(UpstreamError) as raised:
            [event async for event in http.events("/chat/completions", stream_body("drop after two words"))]
    finally:
        await http.aclose()
    assert raised.value.status == 502 and "broke off the connection" in raised.value.message
    assert UPSTREAM_KEY not in raised.value.message
