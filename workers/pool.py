"""The pool runtime: one provider's jobs in, result events and usage out.

For each job: skip it if its deadline passed while it waited, call the
upstream through the provider's adapter, publish numbered events on the job's
result channel, publish a durable usage event, and only then let the queue
acknowledge the job. Every job gets exactly one usage event, which settles it
and closes its hold: a job that fails before producing anything reports zero
usage (no charge); a stream cut after some output is charged for what was
delivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from scheduler.transport import JobQueue, ResultBus, UsageQueue
from schema.catalog import ProviderSpec
from schema.errors import GatewayError, GatewayTimeout, InvalidRequest, UpstreamError
from schema.jobs import EventKind, Job, JobMark, StreamEvent, Usage, UsageEvent
from schema.media import media_usage
from schema.translate import response_usage, stream_translator, translate_request, translate_response, usage_meter
from workers.adapters.base import EmbeddingsAdapter, ImagesAdapter, ProviderAdapter

log = logging.getLogger(__name__)

USAGE_RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)
JOB_STATE_GRACE = 600.0  # how long past its deadline a job's state is remembered


class JobRun:
    """Publishes one job's events in order, numbering them from 0.

    ``emit`` never waits for the bus: events queue up while a publish is in
    flight and go out together in the next one, so a fast upstream is not
    slowed to one bus round trip per chunk, and the first event still leaves
    at once. ``flush`` waits until everything emitted has been published.
    """

    def __init__(self, job: Job, results: ResultBus) -> None:
        self.job = job
        self._results = results
        self._seq = 0
        self._pending: list[StreamEvent] = []
        self._sender: asyncio.Task[None] | None = None
        self.lost: BaseException | None = None  # the bus failed: the client will see a broken stream
        self.output_chars = 0
        self.produced = False  # output reached the client: from here on it is billable

    def emit(self, kind: EventKind, data: Any) -> None:
        self._pending.append({"job": self.job.id, "seq": self._seq, "kind": kind, "data": data})
        self._seq += 1
        self.produced = self.produced or kind in ("chunk", "response")
        if self.lost is None and (self._sender is None or self._sender.done()):
            self._sender = asyncio.create_task(self._send(), name=f"events of {self.job.id}")

    async def _send(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._results.publish(*batch)
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
    ) -> None:
        self.provider = provider
        self.adapter = adapter
        self.concurrency = concurrency
        self.drain_timeout = drain_timeout
        self._jobs = jobs
        self._results = results
        self._usage = usage

    async def run(self) -> None:
        log.info("pool %s serving with concurrency %d", self.provider.name, self.concurrency)
        try:
            await self._jobs.serve(self.provider.name, self.concurrency, self.handle, drain_timeout=self.drain_timeout)
        finally:
            await self.adapter.aclose()

    async def handle(self, job: Job, redelivered: bool) -> None:
        run = JobRun(job, self._results)
        keep = job.deadline - time.time() + JOB_STATE_GRACE
        before = await self._results.mark(job.id, JobMark(state="started"), keep)
        if redelivered and before is not None:
            await self._resume(run, before, keep)
            return
        if job.expired():
            log.warning("job %s expired in the queue; skipped", job.id)
            self._fail(run, GatewayTimeout("the request's deadline passed while it was queued"))
            await run.flush()
            await self._record(self._usage_event(job, Usage(input_tokens=0, output_tokens=0)))
            return
        usage: Usage | None = None
        try:
            async with asyncio.timeout(job.deadline - time.time()):
                if job.kind != "chat":
                    usage = await self._media(run)
                else:
                    usage = await (self._stream(run) if job.stream else self._complete(run))
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
        await self._results.mark(job.id, JobMark(state="done"), keep)

    async def _resume(self, run: JobRun, before: JobMark, keep: float) -> None:
        """A redelivered job that a worker had already started (that worker
        died or lost its channel). It is never run again, since the client may
        already have part or all of an answer:
        - ``done``: only acknowledge it;
        - ``answered``: the client got its answer; record the usage the dead
          worker noted before sending the final event;
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
        await self._results.mark(job.id, JobMark(state="done"), keep)

    async def _answered(self, job: Job, usage: Usage) -> None:
        """Note the usage before the final event goes out: if this worker dies
        after the client has its answer, whoever gets the job charges it."""
        await self._results.mark(job.id, JobMark(state="answered", usage=usage), job.deadline - time.time() + JOB_STATE_GRACE)

    @staticmethod
    def _usage_event(job: Job, usage: Usage) -> UsageEvent:
        return UsageEvent(
            job_id=job.id,
            account_id=job.account_id,
            key_id=job.key_id,
            provider=job.provider,
            model=job.model,
            usage=usage,
            price=job.price,
        )

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
        answer = await self.adapter.complete(job.route.upstream_model, translate_request(job.payload, job.dialect, native))
        usage = response_usage(answer, native) or _estimate(job, len(orjson.dumps(answer)))
        body = translate_response(answer, native, job.dialect, model=job.model)
        await self._answered(job, usage)
        run.emit("response", body)
        return usage

    async def _stream(self, run: JobRun) -> Usage | None:
        job, native = run.job, self.adapter.dialect
        meter = usage_meter(native)
        translator = stream_translator(native, job.dialect, model=job.model)
        payload = translate_request(job.payload, job.dialect, native)
        try:
            async for event in self.adapter.stream(job.route.upstream_model, payload):
                meter.feed(event)
                for translated in translator.feed(event):
                    run.emit("chunk", translated)
            for translated in translator.finish():
                run.emit("chunk", translated)
        finally:
            run.output_chars = meter.output_chars
        await self._answered(job, meter.usage or _estimate(job, meter.output_chars))
        run.emit("end", {"usage": meter.usage.model_dump() if meter.usage else None})
        return meter.usage

    async def _media(self, run: JobRun) -> Usage:
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
        await self._answered(job, usage)
        run.emit("response", answer)
        return usage

    @staticmethod
    def _fail(run: JobRun, error: GatewayError) -> None:
        retry_after = error.retry_after
        run.emit(
            "error",
            {
                "status": error.status,
                "message": error.message,
                "type": error.type,
                "code": error.code,
                "retry_after": retry_after,
            },
        )


def _estimate(job: Job, output_chars: int) -> Usage:
    """About four characters a token: used only when the upstream reported nothing."""
    prompt_chars = len(orjson.dumps(job.payload))
    return Usage(input_tokens=-(-prompt_chars // 4), output_tokens=-(-output_chars // 4), reported=False)


