"""Batches on dramatiq: ``validate_batch`` checks and expands a batch's
input, then starts its chain of ``advance_batch`` messages, each of which
runs the batch's steps (``batch_step_interval`` apart) for ``BURST``
seconds and sends the next, until the batch ends. A message per step would
leave the pace to dramatiq's delayed messages, which measured 1–3 s apart
on RabbitMQ.

The queue is ``<namespace>.batches``: on RabbitMQ distributed (a step's
message is acknowledged after it ran, so a killed orchestrator's step is
redelivered to another), on a ``StubBroker`` in process when embedded.
The steps themselves are ``Orchestrator`` coroutines, run on the role's
event loop (where its database, balances and queues live) from dramatiq's
worker threads. A batch whose chain was lost (a broker outage, a message
dropped after its retries) is found by ``reseed`` when no step touched it
for ``STALE`` seconds, and given a new chain; the old one, if it was only
slow, ends at its next step (``BatchStore.lease``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import dramatiq

from scheduler.batches.orchestrator import Orchestrator

log = logging.getLogger(__name__)

T = TypeVar("T")
STALE = 15.0  # seconds without a step after which a batch's chain counts as lost
RESEED_EVERY = 5.0  # seconds
BURST = 5.0  # seconds of steps one message runs
STEP_TIMEOUT = 120.0  # seconds one message may take (a 200 MB file's validation included)


def send_validate(broker: dramatiq.Broker, queue: str, batch_id: str) -> None:
    """Start a new batch (blocking: call it off the event loop)."""
    broker.enqueue(dramatiq.Message(queue_name=queue, actor_name="validate_batch", args=(batch_id,), kwargs={},
                                    options={}))


class BatchActors:
    """The two actors, declared on ``broker``, running ``orchestrator``'s
    steps on ``loop``."""

    def __init__(self, broker: dramatiq.Broker, orchestrator: Orchestrator, queue: str, *,
                 loop: asyncio.AbstractEventLoop, step_interval: float) -> None:
        self.broker = broker
        self.queue = queue
        self._orchestrator = orchestrator
        self._loop = loop
        self._interval = step_interval
        options: dict[str, Any] = {"broker": broker, "queue_name": queue, "max_retries": 3, "min_backoff": 500,
                                   "time_limit": round(STEP_TIMEOUT * 1000)}
        self.validate = dramatiq.actor(actor_name="validate_batch", **options)(self._validate)
        self.advance = dramatiq.actor(actor_name="advance_batch", **options)(self._advance)

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(STEP_TIMEOUT)

    def _validate(self, batch_id: str) -> None:
        self._run(self._orchestrator.validate(batch_id))
        chain = self._run(self._orchestrator.store.new_chain(batch_id, stale_after=None))
        if chain is not None:
            self.advance.send(batch_id, chain)

    def _advance(self, batch_id: str, chain: str) -> None:
        if self._run(self._orchestrator.run(batch_id, chain, interval=self._interval, for_seconds=BURST)):
            self.advance.send(batch_id, chain)

    async def reseed(self) -> None:
        """Give a new chain to every active batch whose chain is lost."""
        store = self._orchestrator.store
        for batch_id in await store.active():
            chain = await store.new_chain(batch_id, stale_after=STALE)
            if chain is None:
                continue
            batch = await store.get(batch_id)
            if batch is None:
                continue
            log.info("batch %s: no step for %gs; its steps start again", batch_id, STALE)
            if batch.status == "validating":
                await asyncio.to_thread(self.validate.send, batch_id)
            else:
                await asyncio.to_thread(self.advance.send, batch_id, chain)


async def run_orchestrator(orchestrator: Orchestrator, broker: dramatiq.Broker, queue: str, *,
                           step_interval: float, rewind: bool) -> None:
    """A dramatiq worker for the batch queue in this process, until
    cancelled. ``rewind``: the lines released before this start were lost
    with the process's in-process queue (embedded), and are released again."""
    actors = BatchActors(broker, orchestrator, queue, loop=asyncio.get_running_loop(), step_interval=step_interval)
    if rewind:
        for batch_id in await orchestrator.store.active():
            await orchestrator.store.rewind(batch_id)
    worker = dramatiq.Worker(broker, queues={queue}, worker_threads=4, worker_timeout=100)
    await asyncio.to_thread(worker.start)
    log.info("batch orchestrator running on %s", queue)
    try:
        while True:
            await actors.reseed()
            await asyncio.sleep(RESEED_EVERY)
    finally:
        await asyncio.to_thread(worker.stop, round(STEP_TIMEOUT * 1000))
        await asyncio.to_thread(broker.close)
