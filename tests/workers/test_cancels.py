"""A pool stopping a job whose client left, on in-process transports: the
upstream call is abandoned, nothing is retried or handed on, no circuit
counts it, and it settles at zero when nothing was produced; a job handed on
and cancelled in transit never runs."""

from __future__ import annotations

import asyncio
from typing import Any

from scheduler.priority import Work
from scheduler.queues.memory import MemoryJobQueue, MemoryUsageQueue
from scheduler.result_bus.memory import MemoryResultBus
from schema.catalog import ProviderSpec
from tests.workers.test_pool import Failing, serve_once, two_candidates
from workers.adapters.mock import MockAdapter
from workers.breaker_store.memory import MemoryBreakerStore
from workers.breakers import Breakers
from workers.cancels import CancelWatch
from workers.pool import ProviderPool
from workers.resilience import RetryPolicy


class Hanging(MockAdapter):
    """Never answers; notes when its call is abandoned."""

    def __init__(self) -> None:
        self.calls = 0
        self.abandoned = asyncio.Event()

    async def complete(self, model: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        try:
            await asyncio.Event().wait()
        finally:
            self.abandoned.set()
        raise AssertionError("unreachable")


class Counting(MockAdapter):
    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, model: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return await super().complete(model, payload)


async def test_a_running_job_is_stopped_without_retry_hand_off_or_circuit_failure() -> None:
    results, queue, usage = MemoryResultBus(), MemoryJobQueue(), MemoryUsageQueue()
    breakers = Breakers(MemoryBreakerStore(), failures=1)
    cancels = CancelWatch(results)
    watching = asyncio.create_task(cancels.run())
    adapter = Hanging()
    pool = ProviderPool(ProviderSpec(name="first", adapter="mock"), adapter, jobs=queue, results=results, usage=usage,
                        concurrency=1, breakers=breakers, retries=RetryPolicy(retries=2, backoff=0.01),
                        cancels=cancels)
    item = two_candidates()
    try:
        handling = asyncio.create_task(pool.handle(item, False))
        for _ in range(200):
            if adapter.calls:
                break
            await asyncio.sleep(0.01)
        await results.cancel(item.id, 30)
        await asyncio.wait_for(handling, 5)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)

    assert adapter.abandoned.is_set() and adapter.calls == 1, "stopped, and not retried"
    assert await queue.depth("second") == 0, "not handed on"
    settled = [usage._events.get_nowait() for _ in range(usage.pending())]
    assert [(u.usage.input_tokens, u.usage.output_tokens) for u in settled] == [(0, 0)]
    records = await breakers.store.load("first", "first/echo")
    assert [(r.state, r.failures) for r in records] == [("closed", 0), ("closed", 0)]


async def test_a_job_cancelled_while_handed_on_is_skipped_by_the_next_candidate() -> None:
    results, queue = MemoryResultBus(), MemoryJobQueue()
    item = two_candidates()
    await serve_once(Failing(), item, results, queue)
    _, _, onward = queue._queues_of("second")[Work.STANDARD].get_nowait()
    await results.cancel(item.id, 30)  # the client left while the job moved to its next candidate

    adapter = Counting()
    events, settled = await serve_once(adapter, onward, results, queue)
    assert adapter.calls == 0 and events == []
    assert [(u.provider, u.usage.input_tokens, u.usage.output_tokens) for u in settled] == [("second", 0, 0)]
