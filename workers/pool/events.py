"""One job's result events: numbered from 0, sent in order on the result
bus, the final one together with the job's ``answered`` mark.

A batch line's job has no client listening: its final event is kept
(``line_result``) for its usage event, which settles the line and writes
its result in one step (``schema.batches``), and no event is sent.

``JobRun`` also keeps what the job's usage is settled from when the
upstream's own report is missing: how much output reached the client.
"""

from __future__ import annotations

import asyncio
import logging
import time

from scheduler.result_bus import ResultBus
from schema.errors import BusUnavailable, GatewayError
from schema.jobs import (
    JOB_STATE_GRACE,
    DialectObject,
    EndData,
    Job,
    JobMark,
    JobOutcome,
    LineResult,
    StreamEvent,
    Usage,
    error_data,
)

log = logging.getLogger(__name__)


class JobRun:
    """Publishes one job's events in order, numbering them from 0.

    ``emit`` never waits for the bus: it posts the event (``ResultBus.post``),
    and the bus sends what every job of the process posted meanwhile
    together, so a fast upstream is not slowed to one bus round trip per
    chunk, nor a busy worker to one per event. ``flush`` waits until
    everything emitted has been published.
    """

    def __init__(self, job: Job, results: ResultBus, *, taken_at: float | None = None) -> None:
        self.job = job
        self.taken_at = taken_at if taken_at is not None else time.time()
        self._results = results
        self._seq = 0
        self._posted: asyncio.Future[None] | None = None  # the publishing of the last event posted
        self.lost: BaseException | None = None  # the bus failed: the client will see a broken stream
        self.output_chars = 0
        self.reported: Usage | None = None  # the usage the upstream reported so far, mid-stream
        self.produced = False  # output reached the client: from here on it is billable
        self.answered = False  # the final event went out with the ``answered`` mark
        self.first_at: float | None = None  # when its first event was emitted (time to first token)
        self.failure: GatewayError | None = None  # the error its client was answered with
        self.line_result: LineResult | None = None  # a batch line's answer or error, for its usage event

    @property
    def sent(self) -> bool:
        """Whether any event was emitted: from then on the job cannot fail over."""
        return self._seq > 0

    def emit(self, chunk: DialectObject) -> None:
        """Send one stream chunk."""
        self._queue({"job": self.job.id, "seq": self._seq, "kind": "chunk", "data": chunk})
        self.produced = True

    def fail(self, error: GatewayError) -> None:
        """End the client's answer with ``error``."""
        self.failure = error
        self._queue({"job": self.job.id, "seq": self._seq, "kind": "error", "data": error_data(error)})

    async def answer(self, answer: DialectObject, usage: Usage) -> bool:
        """Send the whole answer as the job's final event (``_finish``)."""
        return await self._finish({"job": self.job.id, "seq": self._seq, "kind": "response", "data": answer}, usage)

    async def end(self, reported: Usage | None, usage: Usage) -> bool:
        """End a stream whose chunks all went out, with the usage the provider reported (``_finish``)."""
        data: EndData = {"usage": reported.data() if reported else None}
        return await self._finish({"job": self.job.id, "seq": self._seq, "kind": "end", "data": data}, usage)

    def _queue(self, event: StreamEvent) -> None:
        numbered = self._numbered(event)
        if self.job.batch is not None:
            self._keep(numbered)
            return
        if self.lost is not None:
            return  # after a gap the ingress ends the stream anyway
        posted = self._results.post((numbered,), to=self.job.reply_to)
        if posted is not self._posted:  # a batch this job was not in yet
            self._posted = posted
            posted.add_done_callback(self._published)

    def _published(self, posted: asyncio.Future[None]) -> None:
        error = posted.exception() if not posted.cancelled() else BusUnavailable("the result bus closed")
        if error is not None and self.lost is None:
            self.lost = error

    async def _finish(self, event: StreamEvent, usage: Usage) -> bool:
        """Send the job's final event with its ``answered`` mark (the usage
        to charge) in one atomic step of the bus, after every event before
        it. A worker that dies before that step leaves a job whose client
        never got its answer (its redelivered copy ends it with an error and
        charges nothing); after it, one whose client has it (the copy charges
        the usage). False if the bus failed: the client lacks its final event."""
        if self.job.batch is not None:
            # No client has part of it: a copy redelivered before its usage
            # event went out runs again, so it needs no ``answered`` mark.
            self._keep(self._numbered(event))
            self.produced = True
            return True
        await self.flush()
        if self.lost is not None:
            return False
        job = self.job
        answered = JobMark(state="answered", usage=usage, attempt=job.attempt)
        try:
            await self._results.mark(job.id, answered, job.deadline - time.time() + JOB_STATE_GRACE,
                                     publish=[self._numbered(event)], to=job.reply_to)
        except BusUnavailable as error:
            self.lost = error  # logged by ``flush``
            return False
        self.produced = self.answered = True
        return True

    def _keep(self, event: StreamEvent) -> None:
        if event["kind"] == "response":
            self.line_result = LineResult(response=event["data"])
        elif event["kind"] == "error":
            self.line_result = LineResult(error=dict(event["data"]))

    def _numbered(self, event: StreamEvent) -> StreamEvent:
        """``event``, built with the next ``seq``, which it takes."""
        if self._seq == 0:
            self.first_at = time.time()
            event["provider"] = self.job.provider  # the ingress names who served it
            event["queue_ms"] = round(self.job.queue_wait(self.taken_at) * 1000)  # and how long it waited
        self._seq += 1
        return event

    def outcome(self) -> JobOutcome:
        """How the job ended, as monitoring records it: measured from the
        moment a worker took it, with the clock reads the run makes anyway
        plus this one."""
        taken, failure = self.taken_at, self.failure
        # An error event is the first event of a job that failed at once: no token came.
        first = self.first_at if failure is None or self.produced else None
        return JobOutcome(
            status=failure.status if failure is not None else 200,
            error_type=failure.type[:64] if failure is not None else None,
            latency_ms=_milliseconds(time.time() - taken),
            ttft_ms=_milliseconds(first - taken) if first is not None else None,
            queue_ms=_milliseconds(self.job.queue_wait(taken)),
        )

    async def flush(self) -> None:
        if self._posted is not None:
            if not self._posted.done():
                await asyncio.wait((self._posted,))  # shared with other jobs: never cancel it
            self._published(self._posted)  # its done-callback may not have run yet
        if self.lost is not None:
            # The ingress sees the gap or the silence and ends the client's
            # stream with an error; the job still settles what it used.
            log.error("job %s: result events lost (%s)", self.job.id, self.lost)


def _milliseconds(seconds: float) -> int:
    return max(0, round(seconds * 1000))
