"""Relaying a job's result events to the client: one JSON body, or
server-sent events in OpenAI's or Anthropic's framing.

The relay trusts nothing it did not see: events must arrive numbered
0, 1, 2 … with no gap, and within the idle timeout and the job's deadline.
Otherwise the client gets an error (an HTTP error before the first byte, an
error event after it), never a stream that ends looking complete.

Events that have already arrived when one is relayed go out with it, in one
write: a write costs a system call, more than framing the event, and a
worker often hands over several at once. Nothing waits to be joined.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

import orjson

from billing.pricing import charge
from ingress.errors import anthropic_error_type
from ingress.exchange import Exchange
from scheduler.result_bus import Subscription
from schema.errors import GatewayError, GatewayTimeout, StreamBroken, UpstreamError
from schema.jobs import DialectObject, Price, StreamEvent
from schema.money import MicroCredits, micros_to_credits
from schema.translate.openai import read_usage

log = logging.getLogger(__name__)

DEADLINE_GRACE = 0.5  # seconds


class EventReader:
    def __init__(self, subscription: Subscription, *, deadline: float, idle_timeout: float,
                 exchange: Exchange | None = None) -> None:
        self.subscription = subscription
        self.exchange = exchange  # told a stream's usage, for its request's log line
        self._deadline = deadline
        self._idle_timeout = idle_timeout
        self._expected = 0

    async def next(self, *, first: bool = False) -> StreamEvent:
        # The worker ends a job at its deadline with an event of its own
        # (its answer or its error): wait a moment for it, so the client
        # never gets a timeout for a job that was answered and charged.
        remaining = self._deadline + DEADLINE_GRACE - time.time()
        # Before the first event the job may still be waiting in the queue:
        # only its deadline bounds that wait.
        timeout = remaining if first else min(remaining, self._idle_timeout)
        if timeout <= 0:
            raise GatewayTimeout("the request's deadline passed")
        try:
            event = await self.subscription.next(timeout)
        except TimeoutError:
            if first or remaining <= self._idle_timeout:
                raise GatewayTimeout("no answer before the request's deadline") from None
            raise StreamBroken(f"the worker went silent for {self._idle_timeout:g}s") from None
        # An error ends the stream whatever came before it: it may come from a
        # worker that took over a job another worker had begun.
        if event["seq"] != self._expected and event["kind"] != "error":
            raise StreamBroken(f"result event {self._expected} was lost (got {event['seq']})")
        self._expected += 1
        return event

    def ready(self) -> bool:
        """Whether the next event has arrived (``next`` returns it at once)."""
        return self.subscription.pending() > 0


def raise_for_error(event: StreamEvent) -> None:
    """An ``error`` event becomes the domain error it describes."""
    if event["kind"] == "error":
        data = event["data"]
        error = UpstreamError(data["message"], status=data["status"], retry_after=data["retry_after"])
        error.type = data["type"] or error.type
        error.code = data["code"]
        raise error


def anthropic_sse_error(error: GatewayError) -> bytes:
    body = {"type": "error", "error": {"type": anthropic_error_type(error.status), "message": error.message}}
    return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"


def sse_error(error: GatewayError) -> bytes:
    body = {"error": {"message": error.message, "type": error.type, "param": None, "code": error.code}}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def add_cost(usage: object, price: Price, hold: int | None) -> MicroCredits | None:
    """Price an OpenAI ``usage`` object in place (``usage.cost``, credits as a
    decimal string) as settlement charges it (capped at the job's hold)."""
    measured = read_usage(usage)
    if measured is None or not isinstance(usage, dict):
        return None
    cost = charge(measured, price, hold).cost
    usage["cost"] = micros_to_credits(cost)
    return cost


async def _chunks(first: StreamEvent, reader: EventReader) -> AsyncGenerator[DialectObject, None]:
    """Each ``chunk`` event's data, in order, until the worker's ``end``; an
    ``error`` event (or any other) raises the error it describes."""
    event = first
    while event["kind"] != "end":
        if event["kind"] != "chunk":
            raise_for_error(event)
            raise StreamBroken(f"unexpected {event['kind']!r} event in a stream")
        yield event["data"]
        event = await reader.next()
    if event["kind"] == "end" and reader.exchange is not None:
        reader.exchange.stream_usage = event["data"]["usage"]


async def openai_sse(first: StreamEvent, reader: EventReader, *, include_usage: bool, price: Price,
                     hold: int | None) -> AsyncGenerator[bytes, None]:
    """OpenAI ``chat.completion.chunk`` events, ending ``data: [DONE]`` only
    when the worker said the stream is complete. The usage chunk says what
    the request cost."""
    batch: list[bytes] = []
    try:
        async with aclosing(_chunks(first, reader)) as chunks:
            async for chunk in chunks:
                if include_usage:
                    if chunk.get("usage"):
                        add_cost(chunk["usage"], price, hold)
                    batch.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
                # The gateway always asks upstream for usage; the client did not.
                elif chunk.pop("usage", None) is None or chunk.get("choices"):
                    batch.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
                if batch and not reader.ready():
                    yield _joined(batch)
        batch.append(b"data: [DONE]\n\n")
    except GatewayError as error:
        _ended(reader, error)
        batch.append(sse_error(error))
    finally:
        await reader.subscription.close()
    yield _joined(batch)


async def anthropic_sse(first: StreamEvent, reader: EventReader) -> AsyncGenerator[bytes, None]:
    """Anthropic stream events, each framed ``event: <type>``; the worker's
    events already run from ``message_start`` to ``message_stop``, and a
    failure after the first byte ends the stream with an ``error`` event."""
    batch: list[bytes] = []
    try:
        async with aclosing(_chunks(first, reader)) as chunks:
            async for data in chunks:
                kind = str(data.get("type", "message")).encode()
                batch.append(b"event: " + kind + b"\ndata: " + orjson.dumps(data) + b"\n\n")
                if not reader.ready():
                    yield _joined(batch)
    except GatewayError as error:
        _ended(reader, error)
        batch.append(anthropic_sse_error(error))
    finally:
        await reader.subscription.close()
    if batch:
        yield _joined(batch)


def _ended(reader: EventReader, error: GatewayError) -> None:
    """Say why a stream the ingress broke off ended; a worker's own error
    event is in the worker's log."""
    if isinstance(error, (StreamBroken, GatewayTimeout)):
        log.warning("job %s: stream ended with an error event: %s", reader.subscription.job_id, error.message)


def _joined(batch: list[bytes]) -> bytes:
    """The events of ``batch``, as one write; ``batch`` is emptied."""
    joined = batch[0] if len(batch) == 1 else b"".join(batch)
    batch.clear()
    return joined
