"""RabbitMQ transports (aio-pika): the job queues, the usage queue and the
dead letters.

Job queues are durable classic queues with ``x-max-priority``; expired or
rejected jobs are dead-lettered, and billing reads them back
(``RabbitDeadLetters``). Publishes wait for the broker's confirm, and
many requests publishing at once share the channel, so confirms pipeline.
Consumers take at most ``concurrency`` unacknowledged jobs, so priorities
reorder what is still waiting in the queue.

Each provider has a job queue per kind of work (``scheduler.priority.Work``):
realtime jobs, standard jobs, and bulk and batch jobs (low work), so that a
pool can keep slots from the lower kinds: priority alone cannot, since a
consumer takes whatever is at the head of its queue. A pool consumes the
three, from each at most the slots its kind may hold (``Reserve.share``),
and runs at most ``concurrency`` at once (``scheduler.queues.slots``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import ChannelInvalidStateError
from pydantic import ValidationError

from scheduler.outages import AMQP_OUTAGES, reaching_broker
from scheduler.priority import Work, work_of
from scheduler.queues import USAGE_BATCH, USAGE_LINGER, DeadLetter, DeadLetterHandler, JobHandler, UsageHandler
from scheduler.queues.slots import NO_RESERVE, Reserve, Slots
from scheduler.topology import Topology
from schema.errors import BrokerUnavailable, GatewayTimeout, TransportUnavailable
from schema.jobs import Job, UsageEvent

log = logging.getLogger(__name__)


async def _ack(message: AbstractIncomingMessage, what: str, *, multiple: bool = False) -> None:
    try:
        await message.ack(multiple=multiple)
    except ChannelInvalidStateError:
        # The channel was lost after the work was done; delivery tags do not
        # survive channels, so the broker will redeliver and idempotency applies.
        log.warning("could not ack %s (channel lost); it will be redelivered", what)


def _uncounted(delta: int) -> None:
    """Where a pool's jobs waiting for a slot go when nobody counts them."""


async def _declare_dead_letters(channel: AbstractChannel, topology: Topology) -> None:
    dead = await channel.declare_exchange(topology.dead_exchange, aio_pika.ExchangeType.FANOUT, durable=True)
    queue = await channel.declare_queue(topology.dead_queue, durable=True)
    await queue.bind(dead)


async def _consume(channel: AbstractChannel, queue: AbstractQueue,
                   on_message: Callable[[AbstractIncomingMessage], Awaitable[None]], what: str) -> None:
    """Consume until cancelled, then close the channel: messages still in
    hand are redelivered to the next consumer."""
    tag = await queue.consume(on_message)
    try:
        await asyncio.Future()
    finally:
        try:
            await queue.cancel(tag)
            await channel.close()
        except AMQP_OUTAGES as error:  # the connection may already be gone
            log.debug("closing the %s: %s", what, error)


async def _drain(in_hand: set[asyncio.Task[object]], timeout: float, provider: str) -> None:
    """Let the jobs in hand finish, for at most ``timeout`` seconds."""
    if not in_hand:
        return
    log.info("draining %d %s jobs (at most %gs)", len(in_hand), provider, timeout)
    _, unfinished = await asyncio.wait(set(in_hand), timeout=timeout) if timeout > 0 else (set(), set(in_hand))
    if unfinished:
        log.warning("%d %s jobs still running after the drain; they will be redelivered", len(unfinished), provider)
        for task in unfinished:
            task.cancel()


class RabbitJobQueue:
    def __init__(self, connection: AbstractRobustConnection, topology: Topology, *, persistent: bool = True) -> None:
        self._connection = connection
        self._topology = topology
        self._delivery_mode = aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._declared: dict[str, list[AbstractQueue]] = {}  # strong references for robust reconnects
        self._declaring = asyncio.Lock()
        self._reading: AbstractChannel | None = None  # depth's own channel
        self._opening_reader = asyncio.Lock()

    async def _publisher(self) -> AbstractExchange:
        """The jobs exchange on the publishing channel, which is opened
        again if the broker closed it (a channel error): aio-pika's robust
        channel reopens after a lost connection, but one closed alone can
        stay closed, and every publish after it would fail."""
        if self._exchange is None or self._channel is None or self._channel.is_closed:
            async with self._declaring:
                if self._exchange is None or self._channel is None or self._channel.is_closed:
                    if self._channel is not None:
                        log.warning("the job publishing channel was closed; opening another")
                    self._exchange, self._declared = None, {}
                    self._channel = await self._connection.channel(publisher_confirms=True)
                    await _declare_dead_letters(self._channel, self._topology)
                    self._exchange = await self._channel.declare_exchange(
                        self._topology.jobs_exchange, aio_pika.ExchangeType.DIRECT, durable=True
                    )
        return self._exchange

    async def _reader(self) -> AbstractChannel:
        """A channel for reading queue depths, apart from the publishing
        one: a declare that fails or is given up (admission gives up a slow
        read) closes its channel, and must not close the one jobs go out on."""
        if self._reading is None or self._reading.is_closed:
            async with self._opening_reader:
                if self._reading is None or self._reading.is_closed:
                    self._reading = await self._connection.channel()
        return self._reading

    async def _declare(self, channel: AbstractChannel, exchange: AbstractExchange,
                       provider: str) -> list[AbstractQueue]:
        """``provider``'s queues, declared and bound, one per kind of work in ``Work``'s order."""
        queues = []
        for work in Work:
            queue = await channel.declare_queue(self._topology.job_queue(provider, work), durable=True,
                                                arguments=self._topology.job_queue_arguments)
            await queue.bind(exchange, routing_key=self._topology.job_routing_key(provider, work))
            queues.append(queue)
        return queues

    async def _declared_queue(self, provider: str) -> AbstractChannel:
        """The publishing channel, once ``provider``'s queue is declared and bound."""
        exchange = await self._publisher()
        if provider not in self._declared:
            async with self._declaring:
                if provider not in self._declared:
                    assert self._channel is not None
                    self._declared[provider] = await self._declare(self._channel, exchange, provider)
        assert self._channel is not None
        return self._channel

    async def enqueue(self, job: Job) -> None:
        with reaching_broker(BrokerUnavailable, "the job broker (RabbitMQ)"):
            await self._enqueue(job)

    async def _enqueue(self, job: Job) -> None:
        # Declare before the first publish so a job is never routed nowhere
        # because no worker of that provider has started yet.
        await self._declared_queue(job.provider)
        exchange = await self._publisher()
        remaining = job.deadline - time.time()
        if remaining <= 0:
            raise GatewayTimeout("the request's deadline passed before it could be queued")
        message = aio_pika.Message(
            job.model_dump_json().encode(),
            content_type="application/json",
            message_id=job.id,
            priority=job.priority,
            expiration=max(0.001, remaining),
            delivery_mode=self._delivery_mode,
        )
        # A hand-off enqueues here too, so it follows the same rule.
        await exchange.publish(message, routing_key=self._topology.job_routing_key(job.provider, work_of(job.priority)))

    async def depth(self, provider: str) -> int:
        """Jobs waiting in ``provider``'s queues. Asked often (admission),
        so it redeclares the queues on a reading channel kept open (a round
        trip each, the same arguments as every declarer) rather than opening
        a channel for a passive declare, which a missing queue would close."""
        total = 0
        with reaching_broker(BrokerUnavailable, "the job broker (RabbitMQ)"):
            await self._declared_queue(provider)  # and bound, so a job queued next is routed
            reader = await self._reader()
            for name in (self._topology.job_queue(provider, work) for work in Work):
                declared = await reader.declare_queue(name, durable=True,
                                                      arguments=self._topology.job_queue_arguments)
                total += declared.declaration_result.message_count or 0
        return total

    async def serve(self, provider: str, concurrency: int, handle: JobHandler, *, drain_timeout: float = 0,
                    reserve: Reserve = NO_RESERVE, waiting: Callable[[int], None] | None = None) -> None:
        slots = Slots(concurrency, reserve)
        in_hand: set[asyncio.Task[object]] = set()
        count_waiting = waiting or _uncounted

        def consumer(work: Work, queue_name: str) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
            async def on_message(message: AbstractIncomingMessage) -> None:
                count_waiting(1)
                try:
                    granted = await slots.take(work, message.priority or 0)
                finally:
                    count_waiting(-1)
                if not granted:
                    return  # draining: left unacknowledged, so it is redelivered once its channel closes
                task = asyncio.current_task()
                if task is not None:
                    in_hand.add(task)
                try:
                    await self._handle(message, handle, queue_name)
                finally:
                    slots.release(work)
                    if task is not None:
                        in_hand.discard(task)
            return on_message

        # A channel per queue: each has its own prefetch, the slots its kind
        # of work may hold, which aio-pika's robust channel sets again after a
        # reconnect (one channel would restore only the prefetch set last).
        channels: list[AbstractChannel] = []
        consuming: list[tuple[AbstractQueue, str]] = []
        try:
            for work in Work:
                channel = await self._connection.channel()
                channels.append(channel)
                await channel.set_qos(prefetch_count=reserve.share(concurrency, work))
                if work is Work.REALTIME:
                    await _declare_dead_letters(channel, self._topology)
                    exchange = await channel.declare_exchange(self._topology.jobs_exchange,
                                                              aio_pika.ExchangeType.DIRECT, durable=True)
                    await self._declare(channel, exchange, provider)
                queue = await channel.declare_queue(self._topology.job_queue(provider, work), durable=True,
                                                    arguments=self._topology.job_queue_arguments)
                consuming.append((queue, await queue.consume(consumer(work, queue.name))))
            await asyncio.Future()  # serve until cancelled
        finally:
            slots.close()  # start none of the jobs still waiting for a slot
            try:
                for consumed, tag in consuming:
                    await consumed.cancel(tag)  # take no more
                await _drain(in_hand, drain_timeout, provider)
                for opened in channels:
                    await opened.close()  # jobs still unacknowledged are redelivered
            except AMQP_OUTAGES as error:  # the connection may already be gone
                log.debug("closing the consumers of %s: %s", self._topology.job_queue(provider), error)

    @staticmethod
    async def _handle(message: AbstractIncomingMessage, handle: JobHandler, queue_name: str) -> None:
        try:
            job = Job.model_validate_json(message.body)
        except ValidationError:
            log.error("malformed job message %s on %s; dead-lettered", message.message_id, queue_name)
            await message.reject(requeue=False)
            return
        try:
            await handle(job, bool(message.redelivered))
        except TransportUnavailable as error:
            log.error("job %s: %s; dead-lettered", job.id, error.message)
            await message.reject(requeue=False)
            return
        except Exception:
            # A defect in the handler: the message must still leave the
            # queue's hands (else it is held until the channel closes), and
            # the dead letters settle the job.
            log.exception("job %s failed in its handler; dead-lettered", job.id)
            await message.reject(requeue=False)
            return
        await _ack(message, f"job {job.id}")


class RabbitUsageQueue:
    PREFETCH = 2 * USAGE_BATCH

    def __init__(self, connection: AbstractRobustConnection, topology: Topology) -> None:
        self._connection = connection
        self._topology = topology
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._opening = asyncio.Lock()

    async def _open(self) -> AbstractChannel:
        if self._channel is None:
            async with self._opening:
                if self._channel is None:
                    channel = await self._connection.channel(publisher_confirms=True)
                    self._queue = await self._declare(channel)
                    self._channel = channel
        return self._channel

    async def _declare(self, channel: AbstractChannel) -> AbstractQueue:
        await _declare_dead_letters(channel, self._topology)
        return await channel.declare_queue(
            self._topology.usage_queue, durable=True, arguments={"x-dead-letter-exchange": self._topology.dead_exchange}
        )

    async def publish(self, event: UsageEvent) -> None:
        message = aio_pika.Message(
            event.model_dump_json().encode(),
            content_type="application/json",
            message_id=event.job_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        with reaching_broker(BrokerUnavailable, "the usage queue (RabbitMQ)"):
            channel = await self._open()
            await channel.default_exchange.publish(message, routing_key=self._topology.usage_queue)

    async def serve(self, handle: UsageHandler) -> None:
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self.PREFETCH)
        queue = await self._declare(channel)
        arrived: list[tuple[AbstractIncomingMessage, UsageEvent]] = []
        wake = asyncio.Event()

        async def on_message(message: AbstractIncomingMessage) -> None:
            try:
                event = UsageEvent.model_validate_json(message.body)
            except ValidationError:
                log.error("malformed usage event %s; dead-lettered", message.message_id)
                await message.reject(requeue=False)
                return
            arrived.append((message, event))
            wake.set()

        async def settle() -> None:
            while True:
                await wake.wait()
                if len(arrived) < USAGE_BATCH:
                    await asyncio.sleep(USAGE_LINGER)  # the deliveries meanwhile join the batch
                wake.clear()
                batch = arrived[:USAGE_BATCH]
                del arrived[:USAGE_BATCH]
                if arrived:
                    wake.set()
                try:
                    await handle([event for _, event in batch])
                except Exception:
                    # Any failure (the database, the balances store, or a
                    # defect: logged with its traceback) must leave the batch
                    # unsettled and redelivered, never end the settlement.
                    log.exception("settling %d jobs (%s …) failed; requeued", len(batch), batch[0][1].job_id)
                    await asyncio.sleep(1.0)
                    for message, _ in batch:
                        await message.nack(requeue=True)
                    continue
                # Batches are settled in delivery order: this acknowledges the batch (and nothing later).
                await _ack(batch[-1][0], f"usage of {len(batch)} jobs", multiple=True)

        settler = asyncio.create_task(settle(), name="settlement")
        try:
            await _consume(channel, queue, on_message, "usage consumer")
        finally:
            settler.cancel()
            await asyncio.gather(settler, return_exceptions=True)


class RabbitDeadLetters:
    """Reads the dead-letter queue: each job is handed over with the reason
    in its ``x-death`` header and acknowledged once handled. What is not a
    job (a malformed job message or usage event), or keeps failing, is
    moved to the parked queue for an operator: kept, never looped on."""

    PREFETCH = 16
    RETRY_DELAY = 1.0  # times the tries so far: a failing dead letter backs off
    MAX_TRIES = 10

    def __init__(self, connection: AbstractRobustConnection, topology: Topology) -> None:
        self._connection = connection
        self._topology = topology
        self._tries: dict[str, int] = {}  # job id -> failed tries, while it keeps failing

    async def serve(self, handle: DeadLetterHandler) -> None:
        channel = await self._connection.channel(publisher_confirms=True)  # confirms: parking is durable
        await channel.set_qos(prefetch_count=self.PREFETCH)
        await _declare_dead_letters(channel, self._topology)
        await channel.declare_queue(self._topology.parked_queue, durable=True)
        queue = await channel.declare_queue(self._topology.dead_queue, durable=True)

        async def on_message(message: AbstractIncomingMessage) -> None:
            try:
                letter = _dead_letter(message)
            except ValidationError:
                await self._park(channel, message, "it is not a job")
                return
            try:
                await handle(letter)
            except Exception:
                # Whatever failed (an outage or a defect, logged with its
                # traceback), the reader must go on: the letter is read again
                # later, or parked for an operator.
                tries = self._tries.get(letter.job.id, 0) + 1
                if tries >= self.MAX_TRIES:
                    log.exception("dead letter of job %s failed %d times; parked", letter.job.id, tries)
                    self._tries.pop(letter.job.id, None)
                    await self._park(channel, message, f"reading it failed {tries} times")
                    return
                log.exception("dead letter of job %s failed (try %d); it will be read again", letter.job.id, tries)
                if len(self._tries) > 10_000:  # ids of letters another reader finished
                    self._tries.clear()
                self._tries[letter.job.id] = tries
                await asyncio.sleep(self.RETRY_DELAY * tries)
                await message.nack(requeue=True)
                return
            self._tries.pop(letter.job.id, None)
            await _ack(message, f"dead letter of job {letter.job.id}")

        await _consume(channel, queue, on_message, "dead-letter reader")

    async def _park(self, channel: AbstractChannel, message: AbstractIncomingMessage, why: str) -> None:
        reason, queue = _death(message)
        log.error("dead letter %s from %s (%s) parked in %s: %s", message.message_id, queue, reason,
                  self._topology.parked_queue, why)
        parked = aio_pika.Message(message.body, headers=message.headers, content_type=message.content_type,
                                  message_id=message.message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await channel.default_exchange.publish(parked, routing_key=self._topology.parked_queue)
        await _ack(message, f"parked dead letter {message.message_id}")


def _dead_letter(message: AbstractIncomingMessage) -> DeadLetter:
    """Raises ``ValidationError`` if the message is not a job."""
    reason, queue = _death(message)
    return DeadLetter(Job.model_validate_json(message.body), reason, queue)


def _death(message: AbstractIncomingMessage) -> tuple[str, str]:
    """Why and where the message was dead-lettered, by its latest ``x-death``
    entry (RabbitMQ puts the most recent first)."""
    deaths = (message.headers or {}).get("x-death")
    latest = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
    return str(latest.get("reason", "unknown")), str(latest.get("queue", "unknown"))
