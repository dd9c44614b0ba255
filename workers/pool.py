"""The pool runtime: one provider's jobs in, result events and usage out.

For each job: skip it if its deadline passed while it waited, call the
upstream through the provider's adapter, publish numbered events on the job's
result channel, publish a durable usage event, and only then let the queue
acknowledge the job. Every job gets exactly one usage event, which settles it
and closes its hold: a job that fails before producing anything reports zero
usage (no charge); a stream cut after some output is charged for what was
delivered.

Each attempt runs under the provider's circuit breakers and its per-phase
timeouts (first event, idle between events, total). A failure before any
event left for the client is retried on the same provider or handed to the
model's next candidate whose circuits are not open, by the policy of
``workers.resilience``: the job is re-enqueued on that provider's queue with
that candidate's ``attempt`` (same id, deadline and hold) and this delivery
is acknowledged without a usage event; the worker that finishes the job
settles it. A job may start at any candidate (the ingress passes over
refused ones) and only moves forward. Job marks keep hand-offs exactly
once: a stale or duplicated copy of a job that was handed on never runs.

A job whose client left (``workers.cancels``) is skipped if it was not
started, or its attempt is stopped (closing the upstream connection): it is
neither retried nor handed on, counts against no circuit, and settles what
the upstream reported so far, else an estimate of the output produced, else
nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TypeVar

import orjson

from scheduler.queues import JobQueue, UsageQueue
from scheduler.result_bus import ResultBus
from schema.catalog import ProviderSpec
from schema.circuits import CircuitRecord
from schema.errors import GatewayError, GatewayTimeout, InvalidRequest, QueueTimeout, UpstreamError
from schema.jobs import (
    JOB_STATE_GRACE,
    DialectObject,
    EndData,
    Job,
    JobMark,
    StreamEvent,
    Usage,
    UsageEvent,
    error_data,
)
from schema.media import media_usage
from schema.translate import response_usage, stream_translator, translate_request, translate_response, usage_meter
from workers.adapters.base import EmbeddingsAdapter, ImagesAdapter, ProviderAdapter
from workers.breaker_store.memory import MemoryBreakerStore
from workers.breakers import Breakers
from workers.cancels import CancelWatch, JobCancelled, Watch
from workers.health import HealthLog
from workers.resilience import FailOver, Retry, RetryPolicy

log = logging.getLogger(__name__)

USAGE_RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)

T = TypeVar("T")


class HandOff(Exception):
    """The attempt failed before anything reached the client and the model
    has another candidate: the job goes to it."""

    def __init__(self, cause: GatewayError) -> None:
        super().__init__(cause.message)
        self.cause = cause


class JobRun:
    """Publishes one job's events in order, numbering them from 0.

    ``emit`` never waits for the bus: events queue up while a publish is in
    flight and go out together in the next one, so a fast upstream is not
    slowed to one bus round trip per chunk, and the first event still leaves
    at once. ``flush`` waits until everything emitted has been published.
    """

    def __init__(self, job: Job, results: ResultBus, *, taken_at: float | None = None) -> None:
        self.job = job
        self.taken_at = taken_at if taken_at is not None else time.time()
        self._results = results
        self._seq = 0
        self._pending: list[StreamEvent] = []
        self._sender: asyncio.Task[None] | None = None
        self.lost: BaseException | None = None  # the bus failed: the client will see a broken stream
        self.output_chars = 0
        self.reported: Usage | None = None  # the usage the upstream reported so far, mid-stream
        self.produced = False  # output reached the client: from here on it is billable

    @property
    def sent(self) -> bool:
        """Whether any event was emitted: from then on the job cannot fail over."""
        return self._seq > 0

    def emit(self, chunk: DialectObject) -> None:
        """Send one stream chunk."""
        self._queue({"job": self.job.id, "seq": self._seq, "kind": "chunk", "data": chunk})
        self.produced = True

    def fail(self, error: GatewayError) -> None:
        """End the job with ``error``."""
        self._queue({"job": self.job.id, "seq": self._seq, "kind": "error", "data": error_data(error)})

    async def answer(self, answer: DialectObject, usage: Usage) -> bool:
        """Send the whole answer as the job's final event (``_finish``)."""
        return await self._finish({"job": self.job.id, "seq": self._seq, "kind": "response", "data": answer}, usage)

    async def end(self, reported: Usage | None, usage: Usage) -> bool:
        """End a stream whose chunks all went out, with the usage the provider reported (``_finish``)."""
        data: EndData = {"usage": reported.data() if reported else None}
        return await self._finish({"job": self.job.id, "seq": self._seq, "kind": "end", "data": data}, usage)

    def _queue(self, event: StreamEvent) -> None:
        self._pending.append(self._numbered(event))
        if self.lost is None and (self._sender is None or self._sender.done()):
            self._sender = asyncio.create_task(self._send(), name=f"events of {self.job.id}")

    async def _finish(self, event: StreamEvent, usage: Usage) -> bool:
        """Send the job's final event with its ``answered`` mark (the usage
        to charge) in one atomic step of the bus, after every event before
        it. A worker that dies before that step leaves a job whose client
        never got its answer (its redelivered copy ends it with an error and
        charges nothing); after it, one whose client has it (the copy charges
        the usage). False if the bus failed: the client lacks its final event."""
        await self.flush()
        if self.lost is not None:
            return False
        job = self.job
        answered = JobMark(state="answered", usage=usage, attempt=job.attempt)
        try:
            await self._results.mark(job.id, answered, job.deadline - time.time() + JOB_STATE_GRACE,
                                     publish=[self._numbered(event)], to=job.reply_to)
        except Exception as error:  # Redis errors are many; each means the same here
            self.lost = error  # logged by ``flush``
            return False
        self.produced = True
        return True

    def _numbered(self, event: StreamEvent) -> StreamEvent:
        """``event``, built with the next ``seq``, which it takes."""
        if self._seq == 0:
            event["provider"] = self.job.provider  # the ingress names who served it
            event["queue_ms"] = round(self.job.queue_wait(self.taken_at) * 1000)  # and how long it waited
        self._seq += 1
        return event

    async def _send(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._results.publish(*batch, to=self.job.reply_to)
        except Exception as error:  # Redis errors are many; each means the same here
            self.lost = error
            self._pending.clear()

    async def flush(self) -> None:
        if self._sender is not None:
            await self._sender
        if self.lost is not None:
            # The ingress sees the gap or the silence and ends the client's
            # stream with an error; the job still settles what it used.
            log.error("job %s: result events lost (%s)", self.job.id, self.lost)


class ProviderPool:
    def __init__(
        self,
        provider: ProviderSpec,
        adapter: ProviderAdapter,
        *,
        jobs: JobQueue,
        results: ResultBus,
        usage: UsageQueue,
        concurrency: int,
        drain_timeout: float = 0,
        breakers: Breakers | None = None,
        retries: RetryPolicy = RetryPolicy(),
        health: HealthLog | None = None,
        cancels: CancelWatch | None = None,
    ) -> None:
        """``cancels`` is the process's watch, shared by its pools; without
        one, the pool runs its own."""
        self.provider = provider
        self.adapter = adapter
        self.concurrency = concurrency
        self.drain_timeout = drain_timeout
        self._jobs = jobs
        self._results = results
        self._usage = usage
        self._breakers = breakers if breakers is not None else Breakers(MemoryBreakerStore())
        self._retries = retries
        self._health = health if health is not None else HealthLog()
        self._own_cancels = cancels is None
        self._cancels = cancels if cancels is not None else CancelWatch(results)

    async def run(self) -> None:
        log.info("pool %s serving with concurrency %d", self.provider.name, self.concurrency)
        watch = asyncio.create_task(self._cancels.run(), name="cancellations") if self._own_cancels else None
        try:
            await self._jobs.serve(self.provider.name, self.concurrency, self.handle, drain_timeout=self.drain_timeout)
        finally:
            if watch is not None:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
            await self.adapter.aclose()

    async def handle(self, job: Job, redelivered: bool) -> None:
        # Watched before its cancellation is checked (as it is taken): a
        # cancel announced in between is heard, not missed.
        with self._cancels.watching(job.id) as watch:
            await self._handle(job, redelivered, watch)

    async def _handle(self, job: Job, redelivered: bool, watch: Watch) -> None:
        run = JobRun(job, self._results, taken_at=time.time())
        keep = job.deadline - time.time() + JOB_STATE_GRACE
        try:
            # The circuits are read alongside: the first attempt needs them, unless the job ends here.
            (before, cancelled), circuits = await asyncio.gather(
                self._results.take(job.id, JobMark(state="started", attempt=job.attempt), keep),
                self._breakers.load(job.provider, job.route.upstream_model))
        except Exception as error:  # the bus's errors are many; each means the same here
            # Without the mark a redelivery could answer twice, and without
            # the bus its client hears nothing: settle it at zero (closing its
            # hold) instead of leaving it to the dead letters and the sweeper.
            log.error("job %s: its state cannot be recorded (%s); not run, not charged", job.id, error)
            await self._record(self._usage_event(job, Usage(input_tokens=0, output_tokens=0)))
            return
        if before is not None and before.attempt > job.attempt:
            await self._handed_on(job, before, redelivered)
            return
        if before is not None and before.attempt == job.attempt and before.state != "handed_off":
            if redelivered:
                await self._resume(run, before, keep)
            else:
                # A second copy of a hand-off (its sender died before its
                # ack and the hand-off was redone): the first copy runs it.
                log.warning("job %s: a duplicate of attempt %d; dropped", job.id, job.attempt)
            return
        stale = _stale(job, run.taken_at)
        if stale is not None:
            log.warning("job %s: %s; skipped", job.id, stale.message)
            self._fail(run, stale)
            await run.flush()
            await self._record(self._usage_event(job, Usage(input_tokens=0, output_tokens=0)))
            return
        usage: Usage | None = None
        try:
            async with asyncio.timeout(job.deadline - time.time()):
                usage = await watch.run(self._serve(run, circuits), cancelled=cancelled)
        except JobCancelled:
            log.info("job %s on %s cancelled: its client left%s", job.id, job.provider,
                     "" if run.sent else " before it was answered")
            usage = _cancelled_usage(job, run)
        except HandOff as handoff:
            if await self._hand_off(job, handoff.cause, keep, waited=job.queue_wait(run.taken_at)):
                return
            self._fail(run, handoff.cause)
        except GatewayError as error:
            log.info("job %s on %s failed: %s", job.id, job.provider, error.message)
            self._fail(run, error)
        except TimeoutError:
            log.info("job %s on %s passed its deadline", job.id, job.provider)
            self._fail(run, GatewayTimeout("the request's deadline passed before the provider finished"))
        except Exception:
            # A defect, not an upstream answer: the client still gets a clear
            # error now, and the job still settles, instead of a silent wait.
            log.exception("job %s on %s failed unexpectedly", job.id, job.provider)
            self._fail(run, UpstreamError("the gateway failed to process the provider's answer"))
        if usage is None:
            usage = _estimate(job, run.output_chars) if run.produced else Usage(input_tokens=0, output_tokens=0)
        await run.flush()
        await self._record(self._usage_event(job, usage))
        await self._results.mark(job.id, JobMark(state="done", attempt=job.attempt), keep)

    async def _serve(self, run: JobRun, circuits: list[CircuitRecord] | None = None) -> Usage | None:
        """Attempts on this provider under its breakers, retried by the
        policy while nothing was sent; raises ``HandOff`` to fail over.
        ``circuits``: the breakers' records as the job was taken, for the
        first attempt (a retry reads them again)."""
        job = run.job
        retried = 0
        while True:
            try:
                async with self._breakers.guard(job.provider, job.route.upstream_model, loaded=circuits), \
                        self._health.observe(job.provider):
                    return await self._attempt(run)
            except GatewayError as error:
                circuits = None
                if run.sent:
                    raise
                step = self._retries.next_step(error, retried=retried, remaining=job.deadline - time.time(),
                                               candidates_left=job.attempt + 1 < len(job.routes))
                if isinstance(step, Retry):
                    log.info("job %s on %s failed (%s); retry %d in %.2fs", job.id, job.provider, error.message,
                             retried + 1, step.delay)
                    await asyncio.sleep(step.delay)
                    retried += 1
                    continue
                if isinstance(step, FailOver):
                    raise HandOff(error) from error
                raise

    async def _attempt(self, run: JobRun) -> Usage | None:
        """One upstream call, within the provider's total timeout."""
        try:
            async with asyncio.timeout(self.provider.timeout):
                if run.job.kind != "chat":
                    return await self._media(run)
                return await (self._stream(run) if run.job.stream else self._complete(run))
        except TimeoutError:
            raise GatewayTimeout(f"provider {self.provider.name!r} did not finish within "
                                 f"{self.provider.timeout:g}s") from None

    async def _hand_off(self, job: Job, cause: GatewayError, keep: float, *, waited: float | None = None,
                        to: int | None = None) -> bool:
        """Give the job to its next candidate whose circuits let it through
        (or to attempt ``to``, redoing a hand-off); False if there is none,
        or it could not be queued (its deadline passed, or the broker
        failed), and the job ends here with the cause. ``waited``: its queue
        wait so far, which the next attempt's adds to."""
        if to is None:
            to = await self._next_candidate(job)
            if to is None:
                log.info("job %s: %s failed before answering (%s); every later candidate's circuit is open",
                         job.id, job.provider, cause.message)
                return False
        onward = job.model_copy(update={"attempt": to,
                                        "queued_before": waited if waited is not None else job.queued_before})
        # Marked before it is queued: from here on this attempt never runs again.
        await self._results.mark(job.id, JobMark(state="handed_off", attempt=to, handed_by=job.attempt), keep)
        try:
            await self._jobs.enqueue(onward)
        except Exception as error:  # the broker's errors are many; each means "not queued"
            log.error("job %s: could not hand it to %s (%s); ending it", job.id, onward.provider, error)
            # A later attempt of it, if the enqueue did go through, must not run.
            await self._results.mark(job.id, JobMark(state="done", attempt=onward.attempt), keep)
            return False
        log.info("job %s: %s failed before answering (%s); handed to %s", job.id, job.provider, cause.message,
                 onward.provider)
        return True

    async def _next_candidate(self, job: Job) -> int | None:
        """The attempt of the first later candidate whose circuits are not
        open: a job does not travel through queues only to be refused."""
        later = job.routes[job.attempt + 1:]
        for offset, wait in enumerate(await self._breakers.closed_in(later)):
            if wait == 0:
                return job.attempt + 1 + offset
        return None

    async def _handed_on(self, job: Job, mark: JobMark, redelivered: bool) -> None:
        """A copy of an attempt that already handed the job on. If its worker
        died between the mark and the enqueue, the hand-off may be lost: redo
        it, to the same attempt (a duplicate it makes is dropped by that
        attempt's mark)."""
        if redelivered and mark.state == "handed_off" and mark.handed_by == job.attempt:
            log.warning("job %s: redelivered after handing it to attempt %d; handing it again", job.id, mark.attempt)
            keep = job.deadline - time.time() + JOB_STATE_GRACE
            if not await self._hand_off(job, UpstreamError("the worker handing this request on stopped"), keep,
                                        to=mark.attempt):
                run = JobRun(job.model_copy(update={"attempt": mark.attempt}), self._results)
                self._fail(run, GatewayTimeout("the request could not be handed to another provider in time"))
                await run.flush()
                await self._record(self._usage_event(run.job, Usage(input_tokens=0, output_tokens=0)))
            return
        log.info("job %s: attempt %d is stale (attempt %d has it); acknowledged", job.id, job.attempt, mark.attempt)

    async def _resume(self, run: JobRun, before: JobMark, keep: float) -> None:
        """A redelivered job that a worker had already started (that worker
        died or lost its channel). It is never run again, since the client may
        already have part or all of an answer:
        - ``done``: only acknowledge it;
        - ``answered``: the client got its answer (the final event went out
          with the mark); record the usage the dead worker noted;
        - ``started``: end its stream with an error and charge nothing for
          the interrupted attempt."""
        job = run.job
        if before.state == "done":
            log.info("job %s was redelivered after it finished; acknowledged", job.id)
        elif before.state == "answered" and before.usage is not None:
            log.warning("job %s was redelivered after it answered; recording its usage", job.id)
            await self._record(self._usage_event(job, before.usage))
        else:
            log.warning("job %s was interrupted mid-way (its worker stopped); ending it with an error", job.id)
            self._fail(run, UpstreamError("the worker serving this request stopped; please retry", status=502))
            await run.flush()
            await self._record(self._usage_event(job, Usage(input_tokens=0, output_tokens=0)))
        await self._results.mark(job.id, JobMark(state="done", attempt=job.attempt), keep)

    @staticmethod
    def _usage_event(job: Job, usage: Usage) -> UsageEvent:
        return UsageEvent.of(job, usage)

    async def _record(self, event: UsageEvent) -> None:
        """Publish the usage event, retrying through a broker hiccup; the job
        is acknowledged only after this returns."""
        for delay in USAGE_RETRY_DELAYS:
            try:
                await self._usage.publish(event)
                return
            except Exception as error:  # the broker's errors are many; all mean "not durable yet"
                log.warning("usage of job %s not recorded yet (%s); retrying in %gs", event.job_id, error, delay)
                await asyncio.sleep(delay)
        await self._usage.publish(event)  # last try: failing now dead-letters the job, kept for reconciliation

    async def _complete(self, run: JobRun) -> Usage | None:
        job, native = run.job, self.adapter.dialect
        payload = translate_request(job.payload, job.dialect, native)
        answer = await self.adapter.complete(job.route.upstream_model, payload)
        usage = response_usage(answer, native) or _estimate(job, len(orjson.dumps(answer)))
        body = translate_response(answer, native, job.dialect, model=job.model)
        return usage if await run.answer(body, usage) else None

    async def _stream(self, run: JobRun) -> Usage | None:
        job, native = run.job, self.adapter.dialect
        meter = usage_meter(native)
        translator = stream_translator(native, job.dialect, model=job.model)
        payload = translate_request(job.payload, job.dialect, native)
        spec = self.provider
        try:
            async for event in _paced(self.adapter.stream(job.route.upstream_model, payload), spec.name,
                                      first=spec.first_token_timeout, idle=spec.idle_timeout):
                meter.feed(event)
                for translated in translator.feed(event):
                    run.emit(translated)
            for translated in translator.finish():
                run.emit(translated)
        finally:
            run.output_chars, run.reported = meter.output_chars, meter.usage
        # Charged even if the end event is lost: every chunk reached the client.
        await run.end(meter.usage, meter.usage or _estimate(job, meter.output_chars))
        return meter.usage

    async def _media(self, run: JobRun) -> Usage | None:
        """An embeddings or images job: one answer in OpenAI's shape, billed
        by its own units (``schema.media``)."""
        job, adapter = run.job, self.adapter
        if job.kind == "embeddings" and isinstance(adapter, EmbeddingsAdapter):
            answer = await adapter.embed(job.route.upstream_model, job.payload)
        elif job.kind == "images" and isinstance(adapter, ImagesAdapter):
            answer = await adapter.generate_images(job.route.upstream_model, job.payload)
        else:  # the ingress refuses these; a job from an older config may still come
            raise InvalidRequest(f"provider {job.provider!r} cannot serve {job.kind} requests", param="model")
        usage = media_usage(job.kind, job.payload, answer)
        return usage if await run.answer(answer, usage) else None

    @staticmethod
    def _fail(run: JobRun, error: GatewayError) -> None:
        run.fail(error)


async def _paced(events: AsyncIterator[T], provider: str, *, first: float, idle: float) -> AsyncIterator[T]:
    """The adapter's events, each within its time: the first within
    ``first`` seconds, every later one within ``idle`` of the one before."""
    limit, phase = first, "first-event"
    try:
        while True:
            try:
                async with asyncio.timeout(limit):
                    event = await anext(events)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise GatewayTimeout(f"provider {provider!r} sent nothing for {limit:g}s ({phase} timeout)") from None
            yield event
            limit, phase = idle, "idle"
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()


def _stale(job: Job, taken_at: float) -> GatewayError | None:
    """Why a job taken now must not run: its deadline passed while it was
    queued, or it waited longer than its client allowed."""
    if job.expired(taken_at):
        return GatewayTimeout("the request's deadline passed while it was queued")
    waited = job.queue_wait(taken_at)
    if job.max_queue_wait is not None and waited > job.max_queue_wait:
        return QueueTimeout(f"the request waited {waited:.1f}s in the queue, longer than its "
                            f"x-gatewayz-max-queue-ms of {job.max_queue_wait * 1000:.0f}")
    return None


def _cancelled_usage(job: Job, run: JobRun) -> Usage:
    """What a job stopped for its client's leaving is charged: the usage the
    upstream reported so far (Anthropic's input at ``message_start``), with
    its output raised to the estimate of the output produced; else that
    estimate; nothing when nothing was reported or produced."""
    produced = _estimate(job, run.output_chars)
    if run.reported is not None:
        if run.reported.output_tokens >= produced.output_tokens:
            return run.reported
        return run.reported.model_copy(update={"output_tokens": produced.output_tokens, "reported": False})
    return produced if run.produced else Usage(input_tokens=0, output_tokens=0)


def _estimate(job: Job, output_chars: int) -> Usage:
    """About four characters a token: used only when the upstream reported nothing."""
    prompt_chars = len(orjson.dumps(job.payload))
    return Usage(input_tokens=-(-prompt_chars // 4), output_tokens=-(-output_chars // 4), reported=False)


