"""Submitting a job, the same for every endpoint and dialect: choose the
candidates that can take the request, give it its priority class, choose
the candidate it starts at (``ingress.placement``), take it from its rate
limits, hold its worst-case cost, subscribe to its results, enqueue it, and
wait for its first event.

Whatever fails before the job is queued releases the hold: nothing else
would settle it. Once queued, the worker's usage event settles it; a client
that leaves while waiting cancels the job (``ingress.cancellation``).

An error the client gets once the rate limits admitted the request carries
their ``x-ratelimit-*`` headers; once the job is queued, also its id and
class (and the provider and queue wait, when a worker answered).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import orjson
from fastapi import Request
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from billing.admission import bound_output, check_holdable, worst_case_usage
from billing.balances import Reservation
from billing.ledger import KeyOwner
from billing.pricing import cost_of
from ingress.cancellation import cancel_job, unless_gone
from ingress.exchange import Exchange
from ingress.metrics import SUBMITTED, RequestFacts
from ingress.placement import place
from ingress.ratelimit import estimated_tokens
from ingress.relay import EventReader, raise_for_error
from ingress.runtime import Runtime
from scheduler.admission import queue_deadline
from scheduler.catalog import ModelRoute
from scheduler.priority import MESSAGE_PRIORITY, effective_class, requested_class
from schema.errors import GatewayError, InvalidRequest
from schema.jobs import ClientDialect, DialectObject, Job, JobKind, Route, StreamEvent
from schema.translate import Dialect, Untranslatable, translate_request

# Settlement may lag a job's deadline a little; the sweeper waits this long.
HOLD_GRACE = 60.0
# A request may lower its key's priority class with this header (never raise it).
PRIORITY_HEADER = "x-gatewayz-priority"
# How long the job waited in queues before a worker took it, in milliseconds.
QUEUE_MS_HEADER = "x-gatewayz-queue-ms"


async def json_body(request: Request) -> object:
    """The body, parsed; its size and media type were checked before any
    route ran (``ingress.body_limits``)."""
    try:
        return orjson.loads(await read_body(request.receive))
    except orjson.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON") from None


async def read_body(receive: Receive) -> bytes:
    """The whole body, read off ``receive`` as it comes (Starlette's
    ``Request.body`` costs an async generator per request);
    ``ClientDisconnect`` if the client leaves first."""
    message = await receive()
    if message["type"] != "http.request":
        raise ClientDisconnect()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


@dataclass(slots=True)
class Submitted:
    job: Job
    reader: EventReader
    first: StreamEvent
    headers: dict[str, str]


def candidates(runtime: Runtime, route: ModelRoute, payload: DialectObject, dialect: ClientDialect,
               kind: JobKind) -> list[Route]:
    """The model's candidates whose adapter serves the endpoint and whose
    dialect can express the request, in order. A request no candidate can
    take is refused with the first candidate's reason, before any credit is
    held."""
    if route.spec is not None and route.spec.kind != kind:
        raise InvalidRequest(f"`{route.model}` is a {route.spec.kind} model; this endpoint serves {kind} models",
                             param="model")
    usable: list[Route] = []
    refusal: InvalidRequest | None = None
    # Whether the request translates into a dialect, tried once per dialect
    # (None: it does): candidates mostly share one. The worker translates
    # again for the candidate it calls; the job carries the request as sent.
    translates: dict[str, Untranslatable | None] = {}
    for candidate in route.routes:
        provider = runtime.catalog.provider(candidate.provider)
        if not provider.serves(kind):
            refusal = refusal or InvalidRequest(
                f"provider {provider.name!r} ({provider.adapter} adapter) cannot serve {kind} requests", param="model")
            continue
        if kind != "chat" or provider.dialect == dialect:  # nothing to translate
            usable.append(candidate)
            continue
        if provider.dialect not in translates:
            translates[provider.dialect] = _untranslatable(payload, dialect, provider.dialect)
        if (untranslatable := translates[provider.dialect]) is not None:
            refusal = refusal or untranslatable
            continue
        usable.append(candidate)
    if not usable:
        assert refusal is not None
        raise refusal
    return usable


def _untranslatable(payload: DialectObject, source: ClientDialect, target: Dialect) -> Untranslatable | None:
    try:
        translate_request(payload, source, target)
    except Untranslatable as error:
        return error
    return None


async def submit(
    runtime: Runtime,
    owner: KeyOwner,
    route: ModelRoute,
    payload: DialectObject,
    *,
    stream: bool,
    dialect: ClientDialect = "openai",
    kind: JobKind = "chat",
    priority: str | None = None,
    receive: Receive | None = None,
    max_queue_ms: str | None = None,
    exchange: Exchange | None = None,
) -> Submitted:
    """``priority`` is the class the client asked for (``PRIORITY_HEADER``);
    ``receive`` is the request's, its body read: a client that leaves before
    the first event cancels the job (``ClientDisconnect``); ``max_queue_ms``
    the queue deadline it set (``scheduler.admission.MAX_QUEUE_HEADER``);
    ``exchange`` watches the request (its trace, its log line), if anything does."""
    if exchange is not None:
        exchange.restart()
    now = time.time()
    model_limit = route.spec.max_output_tokens if route.spec else None
    if kind == "chat" and dialect == "openai":
        bound_output(payload, model_limit)  # the provider stops where the hold does
    bound = worst_case_usage(payload, model_limit, kind)
    worst_case = cost_of(bound, route.price)
    check_holdable(worst_case)
    plan = runtime.rate_limits.plan_of(owner)
    priority_class = effective_class(plan.priority, requested_class(priority))
    may_wait = min(queue_deadline(runtime.settings, priority_class, max_queue_ms), runtime.settings.request_timeout)
    job = Job(
        kind=kind,
        dialect=dialect,
        account_id=owner.account_id,
        key_id=owner.key_id,
        model=route.model,
        routes=candidates(runtime, route, payload, dialect, kind),
        payload=payload,
        stream=stream,
        created_at=now,
        deadline=now + runtime.settings.request_timeout,
        price=route.price,
        priority=MESSAGE_PRIORITY[priority_class],
        # A class's queue deadline only steers admission; one the client set is a promise.
        max_queue_wait=may_wait if max_queue_ms is not None else None,
        hold=worst_case,
        reply_to=runtime.results.reply_to,
        traceparent=exchange.traceparent if exchange is not None else None,
    )
    if exchange is not None:
        exchange.job = job
    facts = RequestFacts(job.model, job.provider, priority_class, stream)
    SUBMITTED.set(facts)
    # Before rate limits and the hold: a job refused here takes nothing from either.
    job.attempt = await place(job, runtime.circuits, runtime.pools, may_wait)
    facts.pool = job.provider
    limit_headers = await runtime.rate_limits.admit(owner, plan, estimated_tokens(bound), dialect=dialect)
    if exchange is not None:
        exchange.step("admission")
    with answering(limit_headers):  # a refusal from here on still says where the rate limits stand
        await runtime.balances.reserve(Reservation(job.id, owner.account_id, owner.key_id, worst_case, now,
                                                   expires_at=job.deadline + HOLD_GRACE))
        if exchange is not None:
            exchange.step("hold")
        try:
            # Subscribe before enqueueing: pub/sub keeps nothing for late listeners.
            subscription = await runtime.results.subscribe(job.id)
        except BaseException:
            await runtime.balances.cancel(job.id, owner.account_id)
            raise
        try:
            await runtime.jobs.enqueue(job)
        except BaseException:
            await subscription.close()
            await runtime.balances.cancel(job.id, owner.account_id)  # never queued: nothing will settle it
            raise
    if exchange is not None:
        exchange.step("enqueue")
    reader = EventReader(subscription, deadline=job.deadline, idle_timeout=runtime.settings.stream_idle_timeout,
                         exchange=exchange)
    headers = {"x-gatewayz-job-id": job.id, PRIORITY_HEADER: priority_class, **limit_headers}
    try:
        # The job is queued: any error now, the worker's or the wait's, is its answer and names it.
        with answering(headers):
            first = await unless_gone(reader.next(first=True), receive)
            facts.first_at = time.perf_counter()
            if exchange is not None:  # the relay begins: the wait before it is the worker's to trace
                exchange.first = first
                exchange.restart()
            # Failover may have served it from another candidate than the one
            # it started at; a job no worker took (dead-lettered) names none.
            if "provider" in first:
                headers["x-gatewayz-provider"] = facts.provider = first["provider"]
            if "queue_ms" in first:
                headers[QUEUE_MS_HEADER] = str(first["queue_ms"])
            if first["kind"] == "error" or first.get("provider") != job.provider:
                runtime.circuits.forget(job.routes)  # what failed may have opened a circuit
            raise_for_error(first)
    except BaseException as error:
        await subscription.close()
        if isinstance(error, ClientDisconnect):
            await cancel_job(runtime.results, job)
        raise
    return Submitted(job, reader, first, headers)


@contextmanager
def answering(headers: dict[str, str]) -> Iterator[None]:
    """A ``GatewayError`` raised inside goes to the client with ``headers``
    (a copy, taken as it is raised), under any the error carries itself."""
    try:
        yield
    except GatewayError as error:
        error.job_headers = {**headers, **error.job_headers}
        raise
