"""The server-sent events decoder: events come out whole and in order however
the network cut the body into reads."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from workers.adapters.sse import BOM, Event, SSEDecoder


def decoded(*reads: bytes) -> list[Event]:
    decoder = SSEDecoder()
    events = [event for chunk in reads for event in decoder.feed(chunk)]
    return events + decoder.finish()


def test_each_event_whole() -> None:
    body = b'data: {"a": 1}\n\ndata: {"b": 2}\n\ndata: [DONE]\n\n'
    assert decoded(body) == [(None, b'{"a": 1}'), (None, b'{"b": 2}'), (None, b"[DONE]")]


def test_event_names_and_multi_line_data() -> None:
    body = b"event: message_start\ndata: one\ndata: two\n\nevent: ping\ndata:{}\n\n"
    assert decoded(body) == [("message_start", b"one\ntwo"), ("ping", b"{}")]


def test_comments_ids_retries_and_empty_events_are_skipped() -> None:
    body = b": keep-alive\n\nid: 7\nretry: 100\n\ndata: x\nid: 8\n\n\n\n"
    assert decoded(body) == [(None, b"x")]


def test_crlf_and_cr_framing() -> None:
    assert decoded(b"data: a\r\n\r\ndata: b\r\rdata: c\n\n") == [(None, b"a"), (None, b"b"), (None, b"c")]


def test_a_cr_at_the_end_of_a_read_waits_for_the_next() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []  # half of \r\n: one line end, not two
    assert decoder.feed(b"\r\n") == [(None, b"a")]


def test_a_byte_order_mark_opening_the_body_is_dropped() -> None:
    assert decoded(BOM + b"data: a\n\n") == [(None, b"a")]


def test_an_event_left_without_its_blank_line_is_sent_at_the_end() -> None:
    assert decoded(b"data: a\n\ndata: last") == [(None, b"a"), (None, b"last")]


BODY = (BOM + b'event: start\r\ndata: {"x": "\xc3\xa9"}\r\n\r\n: ping\n\ndata: one\ndata: two\n\n'
        b"data: a\r\rdata: [DONE]\n\n")


@given(st.lists(st.integers(min_value=0, max_value=len(BODY)), max_size=12))
def test_however_the_body_is_cut(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(BODY)]
    assert decoded(*(BODY[start:end] for start, end in pairwise(bounds))) == decoded(BODY) == [
        ("start", '{"x": "é"}'.encode()), (None, b"one\ntwo"), (None, b"a"), (None, b"[DONE]")]
