"""The narrow interfaces between roles, each with two implementations:
in-process (``scheduler.memory``) and real (``scheduler.rabbitmq``,
``scheduler.redis_bus``).

- ``JobQueue``: the ingress enqueues jobs by provider; a worker pool serves
  one provider's queue with at most ``concurrency`` jobs in hand.
- ``ResultBus``: a worker publishes numbered events on a job's channel; the
  ingress subscribes *before* the job is enqueued. It also carries the
  ingress's cancellations (a client left) to every worker.
- ``UsageQueue``: workers publish durable usage events; billing consumes them
  and acknowledges only after the settlement is committed.
- ``DeadLetters``: jobs that left a queue without being run to the end
  (expired while they waited, or rejected by a worker); billing reads them
  and settles each job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from schema.jobs import Job, JobMark, StreamEvent, UsageEvent

JobHandler = Callable[[Job, bool], Awaitable[None]]
"""Called with the job and whether it is a redelivery; returning acks it."""

UsageHandler = Callable[[Sequence[UsageEvent]], Awaitable[None]]
"""Called with a batch of usage events; returning acknowledges them all."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A job message that left its queue unserved, and why: ``reason`` is
    the broker's (``expired``: its deadline passed while it waited;
    ``rejected``: a worker gave up on it), ``queue`` the queue it left."""

    job: Job
    reason: str
    queue: str


DeadLetterHandler = Callable[[DeadLetter], Awaitable[None]]
"""Returning acknowledges the dead letter; raising has it read again later."""


class JobQueue(Protocol):
    async def enqueue(self, job: Job) -> None: ...

    async def serve(self, provider: str, concurrency: int, handle: JobHandler, *, drain_timeout: float = 0) -> None:
        """Consume ``provider``'s jobs until cancelled; then take no more and
        give the jobs in hand up to ``drain_timeout`` seconds to finish (those
        still running are redelivered, or dropped in memory)."""
        ...

    async def depth(self, provider: str) -> int: ...


class Subscription(Protocol):
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
        """Publish consecutive events of one job, in order, as one message,
        to the ingress that queued it (``to``: its job's ``reply_to``)."""
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


# The most usage events settled in one database transaction.
USAGE_BATCH = 256


class UsageQueue(Protocol):
    async def publish(self, event: UsageEvent) -> None:
        """Returns once the event is durable."""
        ...

    async def serve(self, handle: UsageHandler) -> None:
        """Consume until cancelled, in batches of what has arrived (at most
        ``USAGE_BATCH``); a batch is acknowledged after ``handle`` returns,
        and delivered again if it raises."""
        ...


class DeadLetters(Protocol):
    async def serve(self, handle: DeadLetterHandler) -> None:
        """Consume until cancelled. A message that is not a job, or whose
        handling keeps failing, is set aside (never dropped, never looped
        on forever)."""
        ...
