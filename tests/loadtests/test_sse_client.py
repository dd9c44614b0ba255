"""The many-streams scenario's raw client (``loadtests.sse_client``) reads a
streamed completion as an SDK would: tokens, the end, and every way a
stream can fail."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest

from loadtests.fake_upstream import FakeUpstream
from loadtests.sse_client import StreamCall, chat_request, open_stream
from tests.support.servers import ServerThread


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(FakeUpstream().app, name="fake upstream for the sse client") as running:
        yield running


async def _call(server: ServerThread, prompt: str) -> StreamCall:
    call = await open_stream("127.0.0.1", server.port, chat_request("127.0.0.1", server.port, "fake-small", prompt,
                                                                    "sk-test"))
    await asyncio.wait_for(call.done, 30)
    return call


@pytest.mark.parametrize(("prompt", "tokens"), [("words:5", 6), ("pace:2:0:0", 3), ("tick:1", 2)])
async def test_a_stream_to_its_end(server: ServerThread, prompt: str, tokens: int) -> None:
    call = await _call(server, prompt)
    assert call.error is None
    assert len(call.tokens) == tokens  # "Echo:" and the words
    assert call.headers_at is not None and call.ended_at is not None
    assert call.started <= call.headers_at <= call.tokens[0] <= call.tokens[-1] <= call.ended_at


@pytest.mark.parametrize(("prompt", "error"),
                         [("fail:503", "HTTP 503"), ("drop one two three", "closed before [DONE]")])
async def test_a_stream_that_fails(server: ServerThread, prompt: str, error: str) -> None:
    assert (await _call(server, prompt)).error == error


async def test_nothing_listening_ends_the_call_at_once() -> None:
    call = await open_stream("127.0.0.1", 1, b"")
    assert call.done.done() and call.error is not None and call.error.startswith("connect:")


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def _answer(*events: bytes) -> bytes:
    """A chunked HTTP answer with one chunk per event, then the last chunk."""
    body = b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in events)
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n"
    return head + body + b"0\r\n\r\n"


def _event(content: str) -> bytes:
    return b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": content}}]}) + b"\n\n"


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
async def test_an_answer_split_anywhere(size: int) -> None:
    answer = _answer(_event(""), _event("Echo:"), _event(" w") + _event(" w"), b"data: [DONE]\n\n")
    call = StreamCall(b"", asyncio.get_running_loop().create_future())
    call.connection_made(_Transport())  # type: ignore[arg-type]
    for start in range(0, len(answer), size):
        call.data_received(answer[start:start + size])
    assert call.done.done() and call.error is None and len(call.tokens) == 3


@pytest.mark.parametrize(("error", "reported"), [
    (b'{"message": "upstream gone"}', "error event (no code)"),
    (b'{"message": "silent", "type": "api_error", "code": "stream_broken"}', "error event (stream_broken)"),
])
async def test_an_error_event_fails_the_stream_by_its_code(error: bytes, reported: str) -> None:
    answer = _answer(_event("Echo:"), b'data: {"error": ' + error + b'}\n\n', b"data: [DONE]\n\n")
    call = StreamCall(b"", asyncio.get_running_loop().create_future())
    call.connection_made(_Transport())  # type: ignore[arg-type]
    call.data_received(answer)
    assert call.error == reported
