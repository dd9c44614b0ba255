"""The queues between roles, each with two implementations: in-process
(``scheduler.queues.memory``, embedded mode) and RabbitMQ
(``scheduler.queues.rabbitmq``, distributed mode).

- ``JobQueue``: the ingress enqueues jobs by provider; a worker pool serves
  one provider's queue with at most ``concurrency`` jobs in hand.
- ``UsageQueue``: workers publish durable usage events; billing consumes them
  and acknowledges only after the settlement is committed.
- ``DeadLetters``: jobs that left a queue without being run to the end
  (expired while they waited, or rejected by a worker); billing reads them
  and settles each job.

Results flow the other way, on the result bus (``scheduler.result_bus``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from scheduler.queues.slots import NO_RESERVE, Reserve
from schema.jobs import Job, UsageEvent

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

    async def serve(self, provider: str, concurrency: int, handle: JobHandler, *, drain_timeout: float = 0,
                    reserve: Reserve = NO_RESERVE, waiting: Callable[[int], None] | None = None) -> None:
        """Consume ``provider``'s jobs until cancelled; then take no more and
        give the jobs in hand up to ``drain_timeout`` seconds to finish (those
        still running are redelivered, or dropped in memory). The lower kinds
        of work leave ``reserve``'s slots to the higher ones, and a slot that
        frees goes to a realtime job first, then a standard one
        (``scheduler.queues.slots``). ``waiting`` is told (+1, then -1) of
        each job taken from the broker that waits for a slot: out of the
        queue's depth, yet not started (the in-process queue never has one)."""
        ...

    async def depth(self, provider: str) -> int: ...


# The most usage events settled in one database transaction.
USAGE_BATCH = 256
# Seconds a usage event may wait for others to share its settlement transaction.
USAGE_LINGER = 0.01


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
