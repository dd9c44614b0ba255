"""The relay never passes off a broken stream as complete."""

from __future__ import annotations

import time

import pytest

from ingress.relay import EventReader, openai_sse
from scheduler.result_bus.memory import MemoryResultBus
from schema.errors import GatewayTimeout, StreamBroken
from schema.jobs import Price


async def reader_for(job: str, *, deadline: float = 60, idle: float = 1) -> tuple[MemoryResultBus, EventReader]:
    bus = MemoryResultBus()
    inbox = await bus.subscribe(job)
    return bus, EventReader(inbox, deadline=time.time() + deadline, idle_timeout=idle)


async def test_a_gap_in_sequence_numbers_is_a_broken_stream() -> None:
    bus, reader = await reader_for("j")
    await bus.publish({"job": "j", "seq": 0, "kind": "chunk", "data": {}})
    await bus.publish({"job": "j", "seq": 2, "kind": "chunk", "data": {}})
    assert (await reader.next(first=True))["seq"] == 0
    with pytest.raises(StreamBroken, match="event 1 was lost"):
        await reader.next()


async def test_silence_after_the_first_event_is_a_broken_stream() -> None:
    bus, reader = await reader_for("j", idle=0.05)
    await bus.publish({"job": "j", "seq": 0, "kind": "chunk", "data": {}})
    await reader.next(first=True)
    with pytest.raises(StreamBroken, match="silent"):
        await reader.next()


async def test_no_first_event_before_the_deadline_is_a_timeout() -> None:
    _, reader = await reader_for("j", deadline=0.05, idle=10)
    with pytest.raises(GatewayTimeout):
        await reader.next(first=True)


async def test_sse_ends_with_done_only_after_end_and_with_an_error_otherwise() -> None:
    bus, reader = await reader_for("j", idle=0.05)
    chunk = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": "a"}}], "usage": None}
    await bus.publish({"job": "j", "seq": 0, "kind": "chunk", "data": dict(chunk)})
    await bus.publish({"job": "j", "seq": 1, "kind": "chunk", "data": {"choices": [], "usage": {"prompt_tokens": 1}}})
    await bus.publish({"job": "j", "seq": 2, "kind": "end", "data": {}})
    first = await reader.next(first=True)
    # What the client reads: events that arrived together go out in one write.
    sent = b"".join([event async for event in openai_sse(first, reader, include_usage=False, price=Price(),
                                                         hold=None)])
    assert sent == (b'data: {"object":"chat.completion.chunk","choices":[{"delta":{"content":"a"}}]}\n\n'
                    b"data: [DONE]\n\n")

    bus, reader = await reader_for("k", idle=0.05)
    await bus.publish({"job": "k", "seq": 0, "kind": "chunk", "data": dict(chunk)})
    first = await reader.next(first=True)
    sent = b"".join([event async for event in openai_sse(first, reader, include_usage=True, price=Price(), hold=None)])
    frames = sent.split(b"\n\n")
    assert len(frames) == 3 and frames[0].startswith(b'data: {"object"') and frames[1].startswith(b'data: {"error":')
    assert b"[DONE]" not in sent
