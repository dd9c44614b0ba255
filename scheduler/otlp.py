"""The OTLP/protobuf encoding of our finished spans, by hand: an
``ExportTraceServiceRequest`` for one batch (``opentelemetry-proto``'s
``trace_service.proto``), written straight from ``FinishedSpan`` tuples.

Why not the SDK's encoder: it builds a protobuf message object per span,
attribute and value, then serializes them, about 50 us a span on this
machine, on the exporting thread, which shares the GIL with the event loop;
at eight spans a request that alone was most of tracing's budget. We make
a handful of span shapes (ids, name, kind, two times, a few string, int or
bool attributes, a status), so the wire format of those few fields is all
that is written here (a few us a span). ``tests/scheduler/test_otlp.py``
decodes the output with ``opentelemetry-proto`` to check it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from opentelemetry.util.types import AttributeValue

# Proto's SpanKind is the SDK's enum value plus one (0 is UNSPECIFIED there).
KIND_INTERNAL, KIND_SERVER = 1, 2
_STATUS_ERROR = 2
_CACHE_LIMIT = 1024  # encoded names and attributes kept; emptied when full (a root's name holds a client's path)
_LOW = (1 << 64) - 1
_IDS = struct.Struct(">2sQQ2sQ")  # trace_id (1, two big-endian halves), span_id (2), each with its tag and length
_PARENT = struct.Struct(">2sQ")  # parent_span_id (4)
_TIMES = struct.Struct("<BQBQ")  # start (7) and end (8), fixed64 with their tags
_KINDS = {kind: bytes((0x30, kind)) for kind in range(6)}  # kind (6)
_DOUBLE = struct.Struct("<d")


class FinishedSpan(NamedTuple):
    """One span, recorded once it is over (times in ns since the epoch)."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int  # 0: a root with no parent
    trace_state: str  # the W3C ``tracestate`` header, "" for none
    kind: int  # KIND_INTERNAL or KIND_SERVER
    start: int
    end: int
    attributes: Mapping[str, AttributeValue] | None
    error: str | None  # the status's message when the span failed


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field (``tag`` already holds its number and wire type)."""
    return tag + _varint(len(payload)) + payload


def _text(tag: bytes, text: str) -> bytes:
    return _field(tag, text.encode())


def _any_value(value: AttributeValue) -> bytes:
    """An ``AnyValue``: string (1), bool (2), int (3, int64) or double (4);
    a sequence is written as its string, which none of our spans carries."""
    if isinstance(value, str):
        return _text(b"\x0a", value)
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value if value >= 0 else value + (1 << 64))
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    return _text(b"\x0a", str(value))


class Encoder:
    """Encodes batches for one process: its resource (``service.name`` and
    the like) and instrumentation scope are written once, up front."""

    def __init__(self, resource: Mapping[str, AttributeValue], scope: str) -> None:
        self._names: dict[str, bytes] = {}
        self._keys: dict[str, bytes] = {}
        # (key, value) -> its KeyValue field; the tag differs between the resource and a span, so one encoder
        # keeps a span's pairs only (the resource is written once, below, before any span).
        self._pairs: dict[tuple[str, AttributeValue], bytes] = {}
        self._resource = _field(b"\x0a", self._attributes(resource))  # ResourceSpans.resource
        self._pairs.clear()
        self._scope = _field(b"\x0a", _text(b"\x0a", scope))  # ScopeSpans.scope

    def request(self, spans: Iterable[FinishedSpan]) -> bytes:
        """The ``ExportTraceServiceRequest`` body for ``spans``."""
        scope_spans = self._scope + b"".join([_field(b"\x12", self._span(span)) for span in spans])
        resource_spans = self._resource + _field(b"\x12", scope_spans)
        return _field(b"\x0a", resource_spans)

    def _span(self, span: FinishedSpan) -> bytes:
        trace_id = span.trace_id
        parts = [_IDS.pack(b"\x0a\x10", trace_id >> 64, trace_id & _LOW, b"\x12\x08", span.span_id)]
        if span.trace_state:
            parts.append(_text(b"\x1a", span.trace_state))
        if span.parent_id:
            parts.append(_PARENT.pack(b"\x22\x08", span.parent_id))
        parts += (self._cached(self._names, span.name, b"\x2a", span.name), _KINDS[span.kind],
                  _TIMES.pack(0x39, span.start, 0x41, span.end))
        if span.attributes:
            parts.append(self._attributes(span.attributes, b"\x4a"))
        if span.error is not None:
            parts.append(_field(b"\x7a", _text(b"\x12", span.error) + b"\x18\x02"))  # message, code ERROR
        return b"".join(parts)

    def _attributes(self, attributes: Mapping[str, AttributeValue], tag: bytes = b"\x0a") -> bytes:
        """Repeated ``KeyValue`` fields under ``tag``; most pairs (a provider,
        an outcome, a status) recur, so each is encoded once while it does."""
        pairs = self._pairs
        encoded = []
        for pair in attributes.items():
            try:
                field = pairs.get(pair)
            except TypeError:  # a list value: not kept (none of our spans has one)
                encoded.append(_field(tag, _text(b"\x0a", pair[0]) + _field(b"\x12", _any_value(pair[1]))))
                continue
            if field is None:
                field = self._pair(tag, *pair)
                if len(pairs) >= _CACHE_LIMIT:
                    pairs.clear()  # the unique values (job ids) have filled it: the recurring ones come back at once
                pairs[pair] = field
            encoded.append(field)
        return b"".join(encoded)

    def _pair(self, tag: bytes, key: str, value: AttributeValue) -> bytes:
        """A ``KeyValue`` field; a short string (a job id: the pair that
        never recurs) written in one piece, its lengths each one byte."""
        name = self._cached(self._keys, key, b"\x0a", key)
        if isinstance(value, str) and len(value) < 120 and len(name) < 120:
            text = value.encode()
            if len(text) < 120:
                size = len(text)
                return tag + bytes((len(name) + size + 4,)) + name + bytes((0x12, size + 2, 0x0a, size)) + text
        return _field(tag, name + _field(b"\x12", _any_value(value)))

    @staticmethod
    def _cached(cache: dict[str, bytes], text: str, tag: bytes, value: str) -> bytes:
        encoded = cache.get(text)
        if encoded is None:
            encoded = _text(tag, value)
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[text] = encoded
        return encoded
