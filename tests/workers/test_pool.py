"""The pool runtime on in-process transports: what a redelivered job does,
and that every job ends with an event and exactly one usage event."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from scheduler.memory import MemoryResultBus, MemoryUsageQueue
from schema.catalog import ProviderSpec
from schema.jobs import Job, JobMark, Price, Route, Usage, UsageEvent
from workers.adapters.mock import MockAdapter
from workers.pool import ProviderPool


class Exploding(MockAdapter):
    async def complete(self, model: str, payload: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("a defect in an adapter")


def job() -> Job:
    return Job(account_id=1, key_id=1, model="mock/echo", routes=[Route(provider="mock", upstream_model="echo")],
               payload={"messages": [{"role": "user", "content": "hi"}]}, deadline=time.time() + 60,
               price=Price(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2)))


async def run(adapter: MockAdapter, item: Job, *, redelivered: bool = False, state: JobMark | None = None) -> tuple[list[dict], list[UsageEvent]]:
    results, usage = MemoryResultBus(), MemoryUsageQueue()
    pool = ProviderPool(ProviderSpec(name="mock", adapter="mock"), adapter, jobs=None, results=results, usage=usage,  # type: ignore[arg-type]
                        concurrency=1)
    if state is not None:
        await results.mark(item.id, state, 60)
    inbox = await results.subscribe(item.id)
    await pool.handle(item, redelivered)
    events = []
    while True:
        try:
            events.append(await inbox.next(0.05))
        except TimeoutError:
            break
    settled = []
    while usage.pending():
        settled.append(usage._events.get_nowait())
    return events, settled


async def test_a_fresh_job_answers_and_reports_usage() -> None:
    events, usage = await run(MockAdapter(), job())
    assert [e["kind"] for e in events] == ["response"]
    assert [(u.usage.input_tokens, u.usage.output_tokens) for u in usage] == [(1, 3)]


async def test_a_redelivered_job_that_had_started_ends_with_an_error_and_no_charge() -> None:
    events, usage = await run(MockAdapter(), job(), redelivered=True, state=JobMark(state="started"))
    assert [e["kind"] for e in events] == ["error"]
    assert "stopped" in events[0]["data"]["message"]
    assert [(u.usage.input_tokens, u.usage.output_tokens) for u in usage] == [(0, 0)]


async def test_a_redelivered_job_that_had_finished_is_only_acknowledged() -> None:
    events, usage = await run(MockAdapter(), job(), redelivered=True, state=JobMark(state="done"))
    assert events == [] and usage == []


async def test_a_redelivered_job_that_had_answered_is_charged_what_it_noted() -> None:
    noted = Usage(input_tokens=5, output_tokens=9)
    events, usage = await run(MockAdapter(), job(), redelivered=True, state=JobMark(state="answered", usage=noted))
    assert events == []
    assert [u.usage for u in usage] == [noted]


async def test_a_redelivered_job_never_started_runs() -> None:
    events, usage = await run(MockAdapter(), job(), redelivered=True)
    assert [e["kind"] for e in events] == ["response"] and len(usage) == 1


async def test_a_defect_still_ends_the_job_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    events, usage = await run(Exploding(), job())
    assert [e["kind"] for e in events] == ["error"]
    assert events[0]["data"]["status"] == 502
    assert [(u.usage.input_tokens, u.usage.output_tokens) for u in usage] == [(0, 0)]
    assert "failed unexpectedly" in caplog.text
