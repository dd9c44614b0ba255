"""A loopback OTLP/HTTP sink for the benchmark's tracing runs: accepts
``POST /v1/traces`` as a collector does, counts the spans and throws them
away; ``GET /stats`` says how many exports, spans and bytes it took.

    python -m loadtests.otlp_sink --port 4318

It shares the machine with the gateway it measures, so it decodes nothing
it does not need: the spans are counted by walking the protobuf wire
format down to ``ScopeSpans.spans``, skipping every other field by its
length (``tests/support/collector.py`` decodes every span, for the tests).
"""

from __future__ import annotations

import argparse
import gzip
import zlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _fields(data: bytes | memoryview) -> Iterator[tuple[int, memoryview | None]]:
    """(field number, payload) of each field; the payload only for a length-delimited one."""
    view = memoryview(data)
    position, end = 0, len(view)
    while position < end:
        key, position = _varint(view, position)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, position = _varint(view, position)
            yield number, view[position:position + length]
            position += length
        elif wire == 0:
            _, position = _varint(view, position)
            yield number, None
        elif wire in (1, 5):
            position += 8 if wire == 1 else 4
            yield number, None
        else:
            raise ValueError(f"wire type {wire} is not used by OTLP")


def _varint(view: memoryview, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = view[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def count_spans(body: bytes) -> int:
    """Spans in an ``ExportTraceServiceRequest``: resource_spans (1) ->
    scope_spans (2) -> spans (2)."""
    count = 0
    for number, resource_spans in _fields(body):
        if number != 1 or resource_spans is None:
            continue
        for inner, scope_spans in _fields(resource_spans):
            if inner == 2 and scope_spans is not None:
                count += sum(1 for field, _ in _fields(scope_spans) if field == 2)
    return count


class Sink:
    def __init__(self) -> None:
        self.exports = self.spans = self.bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST" and scope["path"] == "/v1/traces":
            body = await _body(receive)
            encoding = dict(scope["headers"]).get(b"content-encoding", b"")
            body = gzip.decompress(body) if encoding == b"gzip" else zlib.decompress(body) \
                if encoding == b"deflate" else body
            self.exports += 1
            self.bytes += len(body)
            self.spans += count_spans(body)
            # An empty ExportTraceServiceResponse: everything accepted.
            await _respond(send, 200, b"", b"application/x-protobuf")
        elif scope["path"] == "/stats":
            stats = {"exports": self.exports, "spans": self.spans, "bytes": self.bytes}
            await _respond(send, 200, orjson.dumps(stats), b"application/json")
        else:
            await _respond(send, 404, b"", b"text/plain")


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description="Count OTLP/HTTP spans and discard them.")
    parser.add_argument("--port", type=int, default=4318)
    arguments = parser.parse_args()
    uvicorn.run(Sink(), host="127.0.0.1", port=arguments.port, log_level="warning", access_log=False,
                lifespan="off")


if __name__ == "__main__":
    main()
