"""Running one job through a real ``ProviderPool`` on the in-memory
transports, and collecting what its client and billing would receive."""

from __future__ import annotations

from scheduler.queues.memory import MemoryUsageQueue
from scheduler.result_bus.memory import MemoryResultBus
from schema.catalog import ProviderSpec
from schema.jobs import Job, JobMark, StreamEvent, UsageEvent
from workers.adapters.base import ProviderAdapter
from workers.pool import ProviderPool


def memory_pool(provider: ProviderSpec, adapter: ProviderAdapter, *,
                results: MemoryResultBus | None = None) -> ProviderPool:
    """A pool of one on in-memory transports (``results``: a bus of the
    test's own); ``run_job`` hands it jobs directly."""
    return ProviderPool(provider, adapter, jobs=None,  # type: ignore[arg-type]
                        results=results if results is not None else MemoryResultBus(),
                        usage=MemoryUsageQueue(), concurrency=1)


async def run_job(pool: ProviderPool, job: Job, *, redelivered: bool = False, state: JobMark | None = None,
                  ) -> tuple[list[StreamEvent], list[UsageEvent]]:
    """The events the job's subscriber received (checked to be numbered
    0, 1, 2 …), and the usage events published. ``state`` is a mark a
    previous worker left."""
    results, usage = pool._results, pool._usage
    assert isinstance(results, MemoryResultBus) and isinstance(usage, MemoryUsageQueue)
    if state is not None:
        await results.mark(job.id, state, 60)
    inbox = await results.subscribe(job.id)
    await pool.handle(job, redelivered)
    events: list[StreamEvent] = []
    while True:
        try:
            events.append(await inbox.next(0.05))
        except TimeoutError:
            break
    settled = []
    while usage.pending():
        settled.append(usage._events.get_nowait())
    assert [event["seq"] for event in events] == list(range(len(events)))
    return events, settled
