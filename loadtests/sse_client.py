"""A streamed chat completion on a raw connection, cheap enough to hold ten
thousand at once in one process.

An ``httpx`` client per stream would cost the load generator more memory
and CPU than the gateway it measures. ``open_stream`` writes one HTTP/1.1
request on an asyncio connection and reads the answer in an
``asyncio.Protocol``: the status line, then the body (chunked, or until the
connection closes), split into server-sent events. It notes when the
headers came, when each content token came, and how the stream ended:
``data: [DONE]`` (success), an error event, an HTTP error, or the
connection closing first.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from typing import Any, cast

import orjson

from loadtests.load import CHAT_PATH


class StreamCall(asyncio.Protocol):
    """One request's answer, read as it arrives. ``done`` resolves when it ends."""

    def __init__(self, request: bytes, done: asyncio.Future[None]) -> None:
        self._request = request
        self.done = done
        self.started = time.monotonic()  # from before connecting: a new connection is part of the wait
        self.connected_at: float | None = None
        self.headers_at: float | None = None
        self.ended_at: float | None = None
        self.tokens = array("d")  # time.monotonic() of each event carrying content
        self.error: str | None = None
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._events = bytearray()
        self._chunked = False
        self._chunk_left = 0  # data bytes still to come in the current chunk
        self._skip = 0  # the CRLF after a chunk's data

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connected_at = time.monotonic()
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass, but is one
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        self._buffer += data
        if self.headers_at is None and not self._head():
            return
        if self._chunked:
            self._dechunk()
        else:
            self._feed(bytes(self._buffer))
            self._buffer.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end("closed before [DONE]" if exc is None else type(exc).__name__)

    def close(self, reason: str) -> None:
        """End the call now (a deadline passed), closing its connection."""
        self._end(reason)

    def _head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[:end + 4]
        self.headers_at = time.monotonic()
        status = head[0].split(" ", 2)
        if len(status) < 2 or status[1] != "200":
            self._end(f"HTTP {status[1] if len(status) > 1 else '?'}")
            return False
        self._chunked = any(line.lower().replace(" ", "") == "transfer-encoding:chunked" for line in head[1:])
        return True

    def _dechunk(self) -> None:
        buffer = self._buffer
        while buffer and not self.done.done():
            if self._chunk_left:
                taken = bytes(buffer[:self._chunk_left])
                del buffer[:len(taken)]
                self._chunk_left -= len(taken)
                self._skip = 0 if self._chunk_left else 2
                self._feed(taken)
            elif self._skip:
                skipped = min(self._skip, len(buffer))
                del buffer[:skipped]
                self._skip -= skipped
            else:
                end = buffer.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(buffer[:end]).split(b";")[0], 16)
                del buffer[:end + 2]
                if size == 0:
                    self._end("no [DONE]")
                    return
                self._chunk_left = size

    def _feed(self, data: bytes) -> None:
        events = self._events
        events += data
        while not self.done.done():
            end = events.find(b"\n\n")
            if end < 0:
                return
            event = bytes(events[:end])
            del events[:end + 2]
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    self._data(line[5:].strip())

    def _data(self, data: bytes) -> None:
        if data == b"[DONE]":
            self._end(None if self.tokens else "no content")
            return
        try:
            chunk: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._end("malformed event")
            return
        if not isinstance(chunk, dict):
            self._end("malformed event")
            return
        if "error" in chunk:  # by its code, so a report tells one cause from another
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            self._end(f"error event ({error.get('code') or error.get('type') or 'no code'})")
            return
        if any((choice.get("delta") or {}).get("content") for choice in chunk.get("choices") or ()):
            self.tokens.append(time.monotonic())

    def _end(self, error: str | None) -> None:
        if self.done.done():
            return
        self.error = error
        self.ended_at = time.monotonic()
        self.done.set_result(None)
        if self._transport is not None:
            self._transport.close()


def chat_request(host: str, port: int, model: str, prompt: str, api_key: str | None) -> bytes:
    """The bytes of one streamed ``POST /v1/chat/completions``."""
    body = orjson.dumps({"model": model, "stream": True, "messages": [{"role": "user", "content": prompt}]})
    authorization = f"authorization: Bearer {api_key}\r\n" if api_key else ""
    return (f"POST {CHAT_PATH} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"accept: text/event-stream\r\n{authorization}content-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n").encode() + body


async def open_stream(host: str, port: int, request: bytes) -> StreamCall:
    """Connect and send ``request``; the call, whose ``done`` resolves when it
    ends (a failure to connect ends it at once)."""
    loop = asyncio.get_running_loop()
    call = StreamCall(request, loop.create_future())
    try:
        await loop.create_connection(lambda: call, host, port)
    except OSError as error:
        call.close(f"connect: {error.strerror or type(error).__name__}")
    return call
