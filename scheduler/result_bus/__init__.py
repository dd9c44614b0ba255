"""The result bus: a worker publishes numbered events on a job's channel, and
the ingress that queued the job reads them from an inbox it opened *before*
the job was enqueued. It also carries the ingress's cancellations (a client
left) to every worker. Two implementations: in-process
(``scheduler.result_bus.memory``, embedded mode) and Redis pub/sub
(``scheduler.result_bus.redis``, distributed mode).

Both deliver into a job's in-process ``Inbox``. The bus reader never blocks
on a slow client: each job gets a bounded buffer, and a job whose client
cannot keep up fails alone and cleanly.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from schema.errors import StreamBroken
from schema.jobs import JobMark, StreamEvent

INBOX_SIZE = 4096


class Subscription(Protocol):
    job_id: str

    async def next(self, timeout: float) -> StreamEvent:
        """The next event; raises ``TimeoutError`` after ``timeout`` seconds
        of silence and ``StreamBroken`` if the subscription was lost."""
        ...

    def pending(self) -> int:
        """How many events ``next`` would return without waiting."""
        ...

    async def close(self) -> None: ...


class ResultBus(Protocol):
    @property
    def reply_to(self) -> str | None:
        """Where this process's jobs are answered (``Job.reply_to``); None: in process."""
        ...

    async def subscribe(self, job_id: str) -> Subscription:
        """The job's inbox; events published for it from now on reach it."""
        ...

    async def publish(self, *events: StreamEvent, to: str | None = None) -> None:
        """Publish consecutive events of one job, in order, to the ingress
        that queued it (``to``: its job's ``reply_to``): ``post``, awaited."""
        ...

    def post(self, events: Sequence[StreamEvent], to: str | None = None) -> asyncio.Future[None]:
        """Send consecutive events of one job, in order, without waiting:
        the future is done once they are published (``BusUnavailable`` if
        they could not be). Events posted by every job of the process in
        one event-loop turn go out together, one message per ingress, so a
        busy worker pays a publish per turn rather than per event; posts
        from one turn never overtake those of an earlier one."""
        ...

    async def marked(self, job_id: str) -> JobMark | None:
        """The job's mark as it stands (None: never marked, or forgotten)."""
        ...

    async def mark(self, job_id: str, mark: JobMark, ttl: float, *,
                   publish: Sequence[StreamEvent] = (), to: str | None = None) -> JobMark | None:
        """Record how far a job got, visible to every worker for ``ttl``
        seconds, unless a later attempt of the job has marked it already (that
        mark stays); returns the mark it had before (None: never seen).

        ``publish``: events of the job published with the mark, atomically:
        both happen or neither (and neither when a later attempt's mark
        stays), so a worker that dies around the step cannot leave a mark
        that claims what its client never got."""
        ...

    async def take(self, job_id: str, mark: JobMark, ttl: float) -> tuple[JobMark | None, bool]:
        """``mark`` and ``cancelled`` in one round trip, for a worker taking
        the job: the mark it had before, and whether it was cancelled."""
        ...

    async def cancel(self, job_id: str, ttl: float) -> None:
        """Ask that the job stop (its client left): a worker running it hears
        it through ``cancellations``, and one that takes it within ``ttl``
        seconds sees it through ``cancelled``. Recorded before it is announced,
        so a worker that starts watching before it checks misses neither."""
        ...

    async def cancelled(self, job_id: str) -> bool:
        """Whether the job's cancellation was asked (within its ``ttl``)."""
        ...

    def cancellations(self) -> AsyncIterator[str | None]:
        """The ids of jobs cancelled from now on, while iterated. One
        subscription, shared by a whole process: never one per job. None
        means the subscription is back after a gap (a lost connection) in
        which announcements may have been missed: ``cancelled`` tells."""
        ...


class Inbox:
    """One job's events as they arrive, for the one reader that relays them.

    A deque and, while the reader waits, one future and one timer: a stream
    of a token a second waits before nearly every event, so ``next`` costs
    neither a task nor a queue's getter bookkeeping per event (``asyncio.wait_for``
    on an ``asyncio.Queue`` did both)."""

    def __init__(self, job_id: str, on_close: Callable[[Inbox], object]) -> None:
        self.job_id = job_id
        self._events: deque[StreamEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._failure: str | None = None
        self._on_close = on_close
        self._closed = False

    def deliver(self, event: StreamEvent) -> None:
        if self._failure is not None:
            return
        if len(self._events) >= INBOX_SIZE:
            self.fail("the client is not reading the stream fast enough")
            return
        self._events.append(event)
        self._wake()

    def fail(self, reason: str) -> None:
        """End the stream with ``StreamBroken`` (the bus lost the
        subscription, or the reader fell too far behind)."""
        if self._failure is None:
            self._failure = reason
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next(self, timeout: float) -> StreamEvent:
        if not self._events and self._failure is None:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        if self._failure is not None:
            raise StreamBroken(f"result stream interrupted: {self._failure}")
        return self._events.popleft()

    def pending(self) -> int:
        return len(self._events)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            result = self._on_close(self)
            if asyncio.iscoroutine(result):
                await result


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
