"""The pool runtime on in-process transports: what a redelivered job does,
that every job ends with an event and exactly one usage event, and that a
job handed to its next candidate is answered and settled exactly once."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from scheduler.priority import Work
from scheduler.queues.memory import MemoryJobQueue, MemoryUsageQueue
from scheduler.result_bus.memory import MemoryResultBus
from schema.catalog import ProviderSpec
from schema.errors import BusUnavailable, UpstreamError
from schema.jobs import Job, JobMark, Price, Route, StreamEvent, Usage, UsageEvent
from tests.support.pools import memory_pool, run_job
from workers.adapters.mock import MockAdapter
from workers.breaker_store.memory import MemoryBreakerStore
from workers.breakers import Breakers
from workers.pool import ProviderPool
from workers.resilience import RetryPolicy


class Exploding(MockAdapter):
    async def complete(self, model: str, payload: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("a defect in an adapter")


def job() -> Job:
    return Job(account_id=1, key_id=1, model="mock/echo", routes=[Route(provider="mock", upstream_model="echo")],
               payload={"messages": [{"role": "user", "content": "hi"}]}, deadline=time.time() + 60,
               price=Price(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2)))


async def run(adapter: MockAdapter, item: Job, *, redelivered: bool = False, state: JobMark | None = None,
              ) -> tuple[list[StreamEvent], list[UsageEvent]]:
    return await run_job(memory_pool(ProviderSpec(name="mock", adapter="mock"), adapter), item,
                         redelivered=redelivered, state=state)


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


# Failover: hand-offs and the marks that keep them exactly once


class Failing(MockAdapter):
    """Answers 500 (as the OpenAI adapter maps it: 502) to everything."""

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, model: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        raise UpstreamError("provider 'first' answered 500: down", status=502)


def two_candidates() -> Job:
    return job().model_copy(update={"routes": [Route(provider="first", upstream_model="echo"),
                                                 Route(provider="second", upstream_model="echo")]})


async def serve_once(adapter: MockAdapter, item: Job, results: MemoryResultBus, queue: MemoryJobQueue, *,
                     redelivered: bool = False, retries: int = 0,
                     breakers: Breakers | None = None) -> tuple[list[dict], list[UsageEvent]]:
    usage = MemoryUsageQueue()
    pool = ProviderPool(ProviderSpec(name=item.provider, adapter="mock"), adapter, jobs=queue, results=results,
                        usage=usage, concurrency=1, retries=RetryPolicy(retries=retries, backoff=0.01),
                        breakers=breakers)
    inbox = await results.subscribe(item.id)
    await pool.handle(item, redelivered)
    events = []
    while True:
        try:
            events.append(await inbox.next(0.05))
        except TimeoutError:
            break
    await inbox.close()
    return events, [usage._events.get_nowait() for _ in range(usage.pending())]


async def test_a_failure_before_any_event_hands_the_job_to_the_next_candidate() -> None:
    results, queue, failing = MemoryResultBus(), MemoryJobQueue(), Failing()
    events, usage = await serve_once(failing, two_candidates(), results, queue, retries=1)
    assert events == [] and usage == [], "the hand-off sends nothing to the client and settles nothing"
    assert failing.calls == 2, "one retry on the same provider first"
    assert await queue.depth("second") == 1
    _, _, onward = queue._queues_of("second")[Work.STANDARD].get_nowait()
    assert (onward.attempt, onward.provider) == (1, "second")

    events, usage = await serve_once(MockAdapter(), onward, results, queue)
    assert [e["kind"] for e in events] == ["response"] and events[0]["provider"] == "second"
    assert [(u.provider, u.usage.output_tokens) for u in usage] == [("second", 3)], "settled once, by who answered"


async def test_the_last_candidate_failing_gives_the_client_its_error_and_no_charge() -> None:
    item = two_candidates().model_copy(update={"attempt": 1})
    events, usage = await serve_once(Failing(), item, MemoryResultBus(), MemoryJobQueue())
    assert [(e["kind"], e["data"]["status"]) for e in events] == [("error", 502)]
    assert [(u.usage.input_tokens, u.usage.output_tokens) for u in usage] == [(0, 0)]


async def test_a_stale_copy_of_a_handed_off_attempt_never_runs() -> None:
    results, queue = MemoryResultBus(), MemoryJobQueue()
    item = two_candidates()
    await results.mark(item.id, JobMark(state="started", attempt=1), 60)
    adapter = Failing()
    events, usage = await serve_once(adapter, item, results, queue)
    assert (events, usage, adapter.calls, await queue.depth("second")) == ([], [], 0, 0)
    assert (await results.mark(item.id, JobMark(state="started", attempt=0), 60)).attempt == 1, "the later mark stays"


async def test_a_redelivered_attempt_whose_hand_off_may_be_lost_hands_it_again_and_one_copy_runs() -> None:
    results, queue = MemoryResultBus(), MemoryJobQueue()
    item = two_candidates()
    # The worker of attempt 0 marked the hand-off, enqueued it, and died before its ack.
    await results.mark(item.id, JobMark(state="handed_off", attempt=1, handed_by=0), 60)
    await queue.enqueue(item.model_copy(update={"attempt": 1}))
    events, usage = await serve_once(Failing(), item, results, queue, redelivered=True)
    assert (events, usage) == ([], [])
    assert await queue.depth("second") == 2, "handed on again: it cannot know the first hand-off was queued"

    copies = [queue._queues_of("second")[Work.STANDARD].get_nowait()[2] for _ in range(2)]
    answered = [await serve_once(MockAdapter(), copy, results, queue) for copy in copies]
    assert [[e["kind"] for e in events] for events, _ in answered] == [["response"], []], "one answer"
    assert [len(usage) for _, usage in answered] == [1, 0], "one usage event"


class Calls(MockAdapter):
    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, model: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return await super().complete(model, payload)


@pytest.mark.parametrize("allowed, runs", [(1.0, False), (5.0, True), (None, True)])
async def test_a_job_that_waited_longer_than_its_client_allowed_never_runs(allowed: float | None, runs: bool) -> None:
    adapter = Calls()
    queued = job().model_copy(update={"enqueued_at": time.time() - 2, "max_queue_wait": allowed})
    events, usage = await run(adapter, queued)
    assert adapter.calls == (1 if runs else 0)
    if runs:  # a class's default queue deadline only steers admission
        assert [e["kind"] for e in events] == ["response"]
    else:
        read = [(e["kind"], e["data"]["status"], e["data"]["code"]) for e in events]
        assert read == [("error", 504, "queue_timeout")]
        assert "x-gatewayz-max-queue-ms of 1000" in events[0]["data"]["message"]
        assert [(u.usage.input_tokens, u.usage.output_tokens) for u in usage] == [(0, 0)]


class FailingFinalStep(MemoryResultBus):
    """A bus that fails at the step sending the final event with the `answered` mark."""

    async def mark(self, job_id: str, mark: JobMark, ttl: float, *, publish: Any = (),
                   to: str | None = None) -> JobMark | None:
        if mark.state == "answered":
            raise BusUnavailable("Redis went away")
        return await super().mark(job_id, mark, ttl, publish=publish, to=to)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_final_event_that_could_not_be_sent_is_charged_only_for_what_arrived(stream: bool) -> None:
    pool = memory_pool(ProviderSpec(name="mock", adapter="mock"), MockAdapter(), results=FailingFinalStep())
    events, usage = await run_job(pool, job().model_copy(update={"stream": stream}))
    assert "end" not in [e["kind"] for e in events] and "response" not in [e["kind"] for e in events]
    (charged,) = usage
    if stream:  # every chunk reached the client: it is charged for them
        assert [e["kind"] for e in events] and set(e["kind"] for e in events) == {"chunk"}
        assert charged.usage.output_tokens > 0
    else:  # the client never got its answer
        assert (charged.usage.input_tokens, charged.usage.output_tokens) == (0, 0)


# Hand-offs pass over candidates whose circuit is open


def three_candidates() -> Job:
    return job().model_copy(update={"routes": [Route(provider=name, upstream_model="echo")
                                               for name in ("first", "second", "third")]})


async def opened(breakers: Breakers, *providers: str) -> Breakers:
    """Open the circuit of each provider's ``echo`` by failing attempts, as its workers would."""
    for provider in providers:
        with pytest.raises(UpstreamError):
            async with breakers.guard(provider, "echo"):
                raise UpstreamError(f"provider {provider!r} answered 500: down", status=502)
    return breakers


async def test_a_hand_off_passes_over_a_candidate_whose_circuit_is_open() -> None:
    results, queue = MemoryResultBus(), MemoryJobQueue()
    breakers = await opened(Breakers(MemoryBreakerStore(), failures=1), "second")
    item = three_candidates()
    events, usage = await serve_once(Failing(), item, results, queue, breakers=breakers)
    assert (events, usage) == ([], [])
    assert (await queue.depth("second"), await queue.depth("third")) == (0, 1), "straight to the third"
    _, _, onward = queue._queues_of("third")[Work.STANDARD].get_nowait()
    assert (onward.attempt, onward.provider) == (2, "third")

    events, usage = await serve_once(MockAdapter(), onward, results, queue, breakers=breakers)
    assert [e["kind"] for e in events] == ["response"] and events[0]["provider"] == "third"
    assert [(u.provider, u.usage.output_tokens) for u in usage] == [("third", 3)], "settled once, by who answered"


async def test_with_every_later_circuit_open_the_job_ends_with_its_own_error() -> None:
    results, queue = MemoryResultBus(), MemoryJobQueue()
    breakers = await opened(Breakers(MemoryBreakerStore(), failures=1), "second", "third")
    events, usage = await serve_once(Failing(), three_candidates(), results, queue, breakers=breakers)
    assert [(e["kind"], e["data"]["status"], e["data"]["message"]) for e in events] == [
        ("error", 502, "provider 'first' answered 500: down")]
    assert [(u.provider, u.usage.input_tokens, u.usage.output_tokens) for u in usage] == [("first", 0, 0)]
    assert (await queue.depth("second"), await queue.depth("third")) == (0, 0)


async def test_a_job_started_at_a_later_candidate_fails_over_from_there() -> None:
    results, queue = MemoryResultBus(), MemoryJobQueue()
    item = three_candidates().model_copy(update={"attempt": 1})  # the ingress passed over the first
    events, usage = await serve_once(Failing(), item, results, queue)
    assert (events, usage) == ([], [])
    assert (await queue.depth("first"), await queue.depth("third")) == (0, 1), "never back to the first"
    assert await results.mark(item.id, JobMark(state="started", attempt=0), 60) == JobMark(
        state="handed_off", attempt=2, handed_by=1)


async def test_only_the_attempt_that_handed_the_job_on_hands_it_again() -> None:
    results, queue = MemoryResultBus(), MemoryJobQueue()
    item = three_candidates()
    # Attempt 0 passed over the second candidate and handed the job to the third, then died before its ack.
    await results.mark(item.id, JobMark(state="handed_off", attempt=2, handed_by=0), 60)
    await serve_once(Failing(), item, results, queue, redelivered=True)
    assert (await queue.depth("second"), await queue.depth("third")) == (0, 1), "handed again, to the same attempt"

    # A copy of attempt 0 when attempt 1 is the one that handed it to the third: stale, only acknowledged.
    later = three_candidates()
    await results.mark(later.id, JobMark(state="handed_off", attempt=2, handed_by=1), 60)
    adapter = Failing()
    events, usage = await serve_once(adapter, later, results, queue, redelivered=True)
    assert (events, usage, adapter.calls, await queue.depth("third")) == ([], [], 0, 1)
