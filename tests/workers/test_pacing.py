"""The pacing of a provider's stream (``workers.pool.attempts.paced``): the
first event within its limit, each later one within the idle limit of the
one before, however long the whole stream lasts; a cancellation from
elsewhere (the client left) stays a cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from schema.errors import GatewayTimeout
from workers.pool.attempts import paced


async def events(gaps: list[float]) -> AsyncIterator[int]:
    for index, gap in enumerate(gaps):
        await asyncio.sleep(gap)
        yield index


async def collected(gaps: list[float], *, first: float, idle: float) -> list[int]:
    return [event async for event in paced(events(gaps), "acme", first=first, idle=idle)]


async def test_a_stream_longer_than_either_limit_runs_to_its_end() -> None:
    assert await collected([0.05] + [0.015] * 60, first=0.5, idle=0.5) == list(range(61))


async def test_a_late_first_event_is_a_first_event_timeout() -> None:
    with pytest.raises(GatewayTimeout, match="sent nothing for 0.05s \\(first-event timeout\\)"):
        await collected([0.3, 0.01], first=0.05, idle=1.0)


async def test_a_gap_between_events_is_an_idle_timeout_after_what_came_before() -> None:
    got: list[int] = []
    with pytest.raises(GatewayTimeout, match="sent nothing for 0.3s \\(idle timeout\\)"):
        async for event in paced(events([0.01, 0.05, 0.05, 1.5, 0.01]), "acme", first=2.0, idle=0.3):
            got.append(event)
    assert got == [0, 1, 2]


async def test_the_time_the_consumer_takes_between_events_is_not_the_providers() -> None:
    got = []
    async for event in paced(events([0.0, 0.0, 0.0]), "acme", first=0.05, idle=0.05):
        got.append(event)
        await asyncio.sleep(0.12)  # past both limits, between two events
    assert got == [0, 1, 2]


async def test_a_cancellation_from_elsewhere_is_not_a_timeout() -> None:
    task = asyncio.create_task(collected([5.0], first=0.05, idle=0.05))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
