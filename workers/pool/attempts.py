"""Running a job on this pool's provider: the adapter call under the
provider's circuit breakers and per-phase timeouts (first event, idle
between events, total), retried on the same provider by the policy of
``workers.resilience`` while nothing has reached the client.

When the policy says to fail over, ``HandOff`` leaves this module and the
loop gives the job to ``workers.pool.handoff``. Translation between the
client's dialect and the provider's happens here, around the call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TypeVar

import orjson

from schema.catalog import ProviderSpec
from schema.circuits import CircuitRecord
from schema.errors import GatewayError, GatewayTimeout, InvalidRequest
from schema.jobs import Usage
from schema.media import media_usage
from schema.translate import response_usage, stream_translator, translate_request, translate_response, usage_meter
from workers.adapters.base import EmbeddingsAdapter, ImagesAdapter, ProviderAdapter
from workers.breakers import Breakers
from workers.health import HealthLog
from workers.metrics import WorkerMetrics
from workers.pool.events import JobRun
from workers.pool.usage import estimate
from workers.resilience import FailOver, Retry, RetryPolicy

log = logging.getLogger(__name__)

T = TypeVar("T")


class HandOff(Exception):
    """The attempt failed before anything reached the client and the model
    has another candidate: the job goes to it."""

    def __init__(self, cause: GatewayError) -> None:
        super().__init__(cause.message)
        self.cause = cause


class Attempts:
    """One provider's way of running a job: its adapter, breakers, health
    log and retry policy."""

    def __init__(self, provider: ProviderSpec, adapter: ProviderAdapter, *, breakers: Breakers,
                 health: HealthLog, retries: RetryPolicy, metrics: WorkerMetrics) -> None:
        self.provider = provider
        self.adapter = adapter
        self._breakers = breakers
        self._health = health
        self._retries = retries
        self._metrics = metrics

    async def serve(self, run: JobRun, circuits: list[CircuitRecord] | None = None) -> Usage | None:
        """Attempts on this provider under its breakers, retried by the
        policy while nothing was sent; raises ``HandOff`` to fail over.
        ``circuits``: the breakers' records as the job was taken, for the
        first attempt (a retry reads them again). Returns the usage to
        charge; None when the final event could not be sent (the caller
        charges what reached the client)."""
        job = run.job
        retried = 0
        while True:
            try:
                async with self._breakers.guard(job.provider, job.route.upstream_model, loaded=circuits), \
                        self._health.observe(job.provider):
                    return await self._attempt(run)
            except GatewayError as error:
                circuits = None
                self._metrics.upstream_failed(job.provider, error)
                if run.sent:
                    raise
                step = self._retries.next_step(error, retried=retried, remaining=job.deadline - time.time(),
                                               candidates_left=job.attempt + 1 < len(job.routes))
                if isinstance(step, Retry):
                    log.info("job %s on %s failed (%s); retry %d in %.2fs", job.id, job.provider, error.message,
                             retried + 1, step.delay)
                    await asyncio.sleep(step.delay)
                    self._metrics.retried(job.provider)
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

    async def _complete(self, run: JobRun) -> Usage | None:
        job, native = run.job, self.adapter.dialect
        payload = translate_request(job.payload, job.dialect, native)
        answer = await self.adapter.complete(job.route.upstream_model, payload)
        usage = response_usage(answer, native) or estimate(job, len(orjson.dumps(answer)))
        body = translate_response(answer, native, job.dialect, model=job.model)
        return usage if await run.answer(body, usage) else None

    async def _stream(self, run: JobRun) -> Usage | None:
        job, native = run.job, self.adapter.dialect
        meter = usage_meter(native)
        translator = stream_translator(native, job.dialect, model=job.model)
        payload = translate_request(job.payload, job.dialect, native)
        spec = self.provider
        try:
            async for event in paced(self.adapter.stream(job.route.upstream_model, payload), spec.name,
                                     first=spec.first_token_timeout, idle=spec.idle_timeout):
                meter.feed(event)
                for translated in translator.feed(event):
                    run.emit(translated)
            for translated in translator.finish():
                run.emit(translated)
        finally:
            run.output_chars, run.reported = meter.output_chars, meter.usage
        # Charged even if the end event is lost: every chunk reached the client.
        await run.end(meter.usage, meter.usage or estimate(job, meter.output_chars))
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


async def paced(events: AsyncIterator[T], provider: str, *, first: float, idle: float) -> AsyncIterator[T]:
    """The adapter's events, each within its time: the first within
    ``first`` seconds, every later one within ``idle`` of the one before."""
    pacer = Pacer(first)
    try:
        while True:
            try:
                with pacer:
                    event = await anext(events)
            except StopAsyncIteration:
                return
            except TimeoutError:
                phase = "first-event" if pacer.limit == first else "idle"
                raise GatewayTimeout(f"provider {provider!r} sent nothing for {pacer.limit:g}s "
                                     f"({phase} timeout)") from None
            yield event
            pacer.limit = idle
    finally:
        pacer.close()
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()


class Pacer:
    """A timeout on each wait for the next event, like ``asyncio.timeout``
    around each one, but with one timer for the whole stream, moved only
    when it fires: a timeout per event cost a timer set and cancelled per
    chunk, about an eighth of a streaming worker's CPU. The timer, when it
    fires, ends the wait in progress if it began ``limit`` ago, and
    otherwise moves to when it would; a wait moves it only if it would
    fire too late (the limit has shortened, from the first event's to the
    idle one)."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[object] | None = None
        self._began = 0.0  # when the wait in progress began
        self._waiting = False
        self._expired = False
        self._cancelling = 0  # the task's cancellation requests as the wait began
        self._timer: asyncio.TimerHandle | None = None

    def __enter__(self) -> None:
        if self._task is None:  # a stream is read by one task: look it up once
            self._task = asyncio.current_task()
        self._cancelling = self._task.cancelling() if self._task is not None else 0
        self._began, self._waiting = self._loop.time(), True
        due = self._began + self.limit
        if self._timer is None or self._timer.when() > due:  # none yet, or the limit has just shortened
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(due, self._check)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: object) -> None:
        self._waiting = False
        if self._expired and self._task is not None:
            self._expired = False
            # As ``asyncio.timeout``: a timeout only if nothing else cancelled the task too.
            if self._task.uncancel() <= self._cancelling and kind is asyncio.CancelledError:
                raise TimeoutError from error

    def _check(self) -> None:
        due = self._began + self.limit
        if self._waiting and self._loop.time() >= due and self._task is not None:
            self._timer = None
            self._expired = True
            self._task.cancel()
        else:  # an event came since (or none is awaited): wait until this wait's limit
            self._timer = self._loop.call_at(max(due, self._loop.time() + self.limit * (not self._waiting)),
                                             self._check)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
