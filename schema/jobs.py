"""The job envelope that travels on the queue, the events that stream its
result back, and the usage event that billing settles."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any, Literal, NotRequired, TypedDict

from pydantic import BaseModel, Field, field_validator

from schema.errors import GatewayError

JobKind = Literal["chat", "embeddings", "images"]
# A JSON object in one of the wire dialects, kept as the client or the
# provider (after translation) wrote it: a request, an OpenAI
# ``chat.completion.chunk``, an Anthropic event, a whole answer. The gateway
# reads a few of its fields (``usage``, ``type``) and passes the rest on.
DialectObject = dict[str, Any]
# The wire format the client spoke, which its payload and result events keep.
ClientDialect = Literal["openai", "anthropic"]

# RabbitMQ recommends few priority levels; classic queues keep one sub-queue each.
MAX_PRIORITY = 4
DEFAULT_PRIORITY = 2

# How long past its deadline a job's mark is remembered: longer than any
# copy of it (a redelivery, a dead letter) can take to arrive.
JOB_STATE_GRACE = 600.0


class Route(BaseModel):
    """One candidate: a provider and the model id that provider knows."""

    provider: str
    upstream_model: str


class Price(BaseModel):
    """Credits per million tokens, and per generated image, snapshotted at admission."""

    input_per_mtok: Decimal = Decimal(0)
    output_per_mtok: Decimal = Decimal(0)
    per_image: Decimal = Decimal(0)


class BatchLine(BaseModel):
    """Which batch and line a job answers."""

    batch_id: str
    line: int = Field(ge=0)
    custom_id: str


class Job(BaseModel):
    id: str = Field(default_factory=lambda: f"job_{uuid.uuid4().hex}")
    kind: JobKind = "chat"
    dialect: ClientDialect = "openai"
    account_id: int
    key_id: int
    model: str = Field(description="the model id the client asked for")
    routes: list[Route] = Field(min_length=1)
    attempt: int = 0
    payload: DialectObject  # the client's request in its dialect, without model and stream
    stream: bool = False
    priority: int = Field(DEFAULT_PRIORITY, ge=0, le=MAX_PRIORITY)
    created_at: float = Field(default_factory=time.time)
    enqueued_at: float | None = Field(None, description="when this attempt was queued (set by the queue)")
    queued_before: float = Field(0.0, ge=0, description="seconds earlier attempts waited in queues (failover)")
    deadline: float
    max_queue_wait: float | None = Field(None, ge=0, description="seconds the client let the job wait in queues "
                                                                   "(x-gatewayz-max-queue-ms); past them it never runs")
    price: Price
    hold: int | None = Field(None, ge=0, description="micro-credits held for it: the most it can be charged")
    reply_to: str | None = Field(None, description="where its events go: the queuing ingress's channel")
    traceparent: str | None = Field(None, description="W3C traceparent of its request's span at the ingress "
                                                      "(only when the ingress traces): the parent of its spans")
    batch: BatchLine | None = Field(None, description="the batch line it runs: its answer goes on its usage event")

    @property
    def route(self) -> Route:
        return self.routes[self.attempt]

    @property
    def provider(self) -> str:
        return self.route.provider

    def queue_wait(self, taken_at: float) -> float:
        """Seconds this job has waited in queues, up to a worker taking it at
        ``taken_at``: every attempt's wait (clocks of the ingress and worker
        hosts are assumed in step, as for deadlines)."""
        queued = max(0.0, taken_at - self.enqueued_at) if self.enqueued_at is not None else 0.0
        return self.queued_before + queued

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.deadline

    def state_ttl(self) -> float:
        """Seconds from now that this job's mark is kept (``JobMark``)."""
        return self.deadline - time.time() + JOB_STATE_GRACE


EventKind = Literal["chunk", "response", "error", "end"]


class ErrorData(TypedDict):
    """The ``data`` of an ``error`` event: the error the ingress raises again."""

    status: int
    message: str
    type: str
    code: str | None
    retry_after: float | None


class UsageData(TypedDict):
    """``Usage`` as it travels in an ``end`` event (``Usage.model_dump()``)."""

    input_tokens: int
    output_tokens: int
    images: int
    reported: bool


class EndData(TypedDict):
    """The ``data`` of an ``end`` event: the usage the provider reported, if it did."""

    usage: UsageData | None


class _EventHeader(TypedDict):
    job: str
    seq: int
    provider: NotRequired[str]
    queue_ms: NotRequired[int]


class ChunkEvent(_EventHeader):
    kind: Literal["chunk"]
    data: DialectObject


class ResponseEvent(_EventHeader):
    kind: Literal["response"]
    data: DialectObject


class ErrorEvent(_EventHeader):
    kind: Literal["error"]
    data: ErrorData


class EndEvent(_EventHeader):
    kind: Literal["end"]
    data: EndData


StreamEvent = ChunkEvent | ResponseEvent | ErrorEvent | EndEvent
"""One numbered event on a job's result channel, told apart by ``kind``.

``chunk``: one stream event in the job's dialect (an OpenAI
``chat.completion.chunk``, an Anthropic event); ``response``: the whole
answer in the job's dialect; ``error``: the error that ends the job;
``end``: the stream is complete, with the usage the provider reported.
The first event (``seq`` 0) names the ``provider`` that served the job,
which failover may have made another than the first candidate, and its
``queue_ms``: how long it waited in queues before a worker took it.
"""


def error_data(error: GatewayError) -> ErrorData:
    """The ``data`` of an ``error`` event, which the ingress turns back into the error."""
    return {"status": error.status, "message": error.message, "type": error.type, "code": error.code,
            "retry_after": error.retry_after}


# Counts an upstream reports are kept up to this: far beyond any real request
# (its charge is capped at the hold anyway), safely inside a 64-bit column.
USAGE_CEILING = 2**53


class Usage(BaseModel):
    input_tokens: int = Field(0, ge=0)
    output_tokens: int = Field(0, ge=0)
    images: int = Field(0, ge=0, description="images generated (image generation is billed per image)")
    reported: bool = Field(True, description="false when the gateway estimated it")

    @field_validator("input_tokens", "output_tokens", "images")
    @classmethod
    def _within_ceiling(cls, count: int) -> int:
        return min(count, USAGE_CEILING)

    def data(self) -> UsageData:
        """As an ``end`` event carries it (what ``model_dump`` gives, typed)."""
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "images": self.images,
                "reported": self.reported}


class JobMark(BaseModel):
    """How far a job got, shared by every worker (a redelivered job must
    never answer twice, and an answered one must still be charged).

    ``started``: a worker began it (events may have reached the client);
    ``answered``: its final event is about to go out, with this usage;
    ``done``: its usage event is durable;
    ``handed_off``: it failed over before anything reached the client,
    ``attempt`` is the candidate it was handed to and ``handed_by`` the
    attempt that handed it (candidates whose circuit is open are passed
    over, so the two need not be neighbours).

    A mark belongs to one ``attempt`` (the index into ``Job.routes``); a
    mark of a later attempt is never overwritten by an earlier one, so a
    stale copy of a job that was handed on can tell.
    """

    state: Literal["started", "answered", "done", "handed_off"]
    usage: Usage | None = None
    attempt: int = 0
    handed_by: int | None = None


class JobOutcome(BaseModel):
    """What the client saw of a job and how long it took, measured by the
    worker from what it keeps anyway (no clock read on the request path
    beyond the ones it already makes)."""

    status: int = Field(200, ge=100, le=599, description="the HTTP status the client's answer carries")
    error_type: str | None = Field(None, max_length=64, description="the error's type, when it failed")
    latency_ms: int | None = Field(None, ge=0, description="from a worker taking the job to its last event")
    ttft_ms: int | None = Field(None, ge=0, description="from a worker taking the job to its first event")
    queue_ms: int | None = Field(None, ge=0, description="time spent waiting in queues, every attempt's")

    @property
    def failed(self) -> bool:
        return self.status >= 400


class LineResult(BaseModel):
    """What a line's job ended with: the whole answer in its dialect
    (``response``), or the error its client would have got (``error``)."""

    response: DialectObject | None = None
    error: dict[str, Any] | None = None  # ``ErrorData`` (a TypedDict pydantic refuses before Python 3.12)

    @property
    def outcome(self) -> Literal["succeeded", "errored", "expired"]:
        if self.response is not None:
            return "succeeded"
        if self.error is not None and self.error["code"] == "batch_expired":
            return "expired"
        return "errored"


class UsageEvent(BaseModel):
    """Durable record that a job consumed upstream capacity; settled once by job id."""

    job_id: str
    account_id: int
    key_id: int
    provider: str
    model: str
    usage: Usage
    price: Price
    hold: int | None = Field(None, ge=0, description="the job's hold: the most it is charged")
    held_at: float | None = Field(None, description="when its hold was taken (the key periods it counts in)")
    finished_at: float = Field(default_factory=time.time)
    # How the job ended, for monitoring (``billing.rollups``); set where the
    # reporting role knows it, none where it does not (an event from an
    # older worker, a job skipped before it ran).
    outcome: JobOutcome | None = None
    traceparent: str | None = Field(None, description="its job's ``traceparent``: settlement joins its trace")
    batch: BatchLine | None = None
    result: LineResult | None = Field(None, description="a batch line's answer or error, written as it settles")

    @classmethod
    def of(cls, job: Job, usage: Usage, outcome: JobOutcome | None = None, *,
           result: LineResult | None = None) -> UsageEvent:
        """The usage event that settles ``job`` (whichever role reports it);
        ``result``: what a batch line's job ended with."""
        return cls(job_id=job.id, account_id=job.account_id, key_id=job.key_id, provider=job.provider,
                   model=job.model, usage=usage, price=job.price, hold=job.hold, held_at=job.created_at,
                   outcome=outcome, traceparent=job.traceparent, batch=job.batch,
                   result=result if job.batch is not None else None)
