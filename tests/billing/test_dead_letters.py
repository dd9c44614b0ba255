"""Dead letters on the real RabbitMQ, Redis and PostgreSQL, read by the
billing role: a job that expired in its queue or that a worker rejected is
settled by its mark, once, however many copies of it die; what is not a
job, or keeps failing, is parked, never dropped or looped on."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal

import aio_pika
import pytest
import redis.asyncio as redis
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from aiormq.exceptions import ChannelNotFoundEntity
from sqlalchemy import func, select

from billing.balances.memory import MemoryBalances
from billing.consumer import SettlementConsumer
from billing.dead_letters import DeadLetterReader
from billing.ledger import Balance, Ledger
from billing.pricing import cost_of
from billing.snapshots import LedgerSnapshots
from scheduler.connections import amqp_connection
from scheduler.queues import DeadLetter
from scheduler.queues.rabbitmq import RabbitDeadLetters, RabbitJobQueue, RabbitUsageQueue
from scheduler.result_bus import Inbox
from scheduler.result_bus.redis import RedisResultBus
from scheduler.topology import Topology
from schema.database import create_engine
from schema.jobs import Job, JobMark, Price, Route, StreamEvent, Usage, UsageEvent
from schema.settings import Settings
from schema.tables import usage_records
from tests.support.databases import PostgresTemplate
from tests.support.services import BROKER_URL, REDIS_URL, Distributed, fresh_namespace

GRANT = 1_000_000  # micro-credits
HOLD = 50_000
PRICE = Price(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2))
USAGE = Usage(input_tokens=1000, output_tokens=2000)
COST = cost_of(USAGE, PRICE)
ROUTES = [Route(provider="p", upstream_model="m"), Route(provider="q", upstream_model="m")]


@dataclass
class Billing:
    """The billing role's parts (settlement consumer, dead-letter reader)
    on a fresh namespace and database, and what a worker and a client use."""

    topology: Topology
    connection: AbstractRobustConnection
    ledger: Ledger
    bus: RedisResultBus
    jobs: RabbitJobQueue
    dead: RabbitDeadLetters
    reader: DeadLetterReader
    account_id: int
    key_id: int

    async def job(self, *, ttl: float = 60, attempt: int = 0) -> Job:
        """A job with its credits held, as the ingress makes it."""
        job = Job(account_id=self.account_id, key_id=self.key_id, model="m", routes=ROUTES, attempt=attempt,
                  payload={}, deadline=time.time() + ttl, price=PRICE, reply_to=self.bus.reply_to)
        await self.ledger.hold(job.id, self.account_id, HOLD, expires_at=job.deadline + 60)
        return job

    async def balance(self) -> Balance:
        return await self.ledger.balance(self.account_id)

    async def settled_once(self, job: Job, timeout: float = 10) -> tuple[int, Balance]:
        """Waits until the job's hold is closed; its usage rows and the balance then."""
        deadline = time.monotonic() + timeout
        while (await self.balance()).held and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        async with self.ledger.engine.connect() as connection:
            rows = (await connection.execute(select(func.count()).select_from(usage_records)
                                             .where(usage_records.c.job_id == job.id))).scalar_one()
        return rows, await self.balance()

    async def dead_copy(self, job: Job, reason: str = "rejected") -> None:
        await publish_dead_copy(self.connection, self.topology, job, reason)


async def publish_dead_copy(connection: AbstractRobustConnection, topology: Topology, job: Job,
                            reason: str = "rejected") -> None:
    """A dead letter of ``job`` as RabbitMQ makes one (another copy of one already read)."""
    channel = await connection.channel()
    death = {"count": 1, "reason": reason, "queue": topology.job_queue(job.provider), "exchange": "",
             "routing-keys": [job.provider]}
    message = aio_pika.Message(job.model_dump_json().encode(), message_id=job.id, headers={"x-death": [death]})
    exchange = await channel.get_exchange(topology.dead_exchange)
    await exchange.publish(message, routing_key="")
    await channel.close()


async def poll(queue: AbstractQueue, timeout: float = 10) -> AbstractIncomingMessage:
    """The next message on ``queue``, waiting for it up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (message := await queue.get(fail=False)) is None:
        assert time.monotonic() < deadline, f"nothing arrived on {queue.name}"
        await asyncio.sleep(0.05)
    return message


@pytest.fixture
def services(postgresql_template: PostgresTemplate) -> Iterator[Distributed]:
    """A database and a namespace for each test: no test reads another's letters or holds."""
    with postgresql_template.fresh() as database, fresh_namespace(["p", "q"]) as namespace:
        assert database.database_url is not None
        yield Distributed(BROKER_URL, REDIS_URL, database.database_url, namespace)


@pytest.fixture
async def billing(services: Distributed) -> AsyncIterator[Billing]:
    engine = create_engine(Settings(database_url=services.database_url))
    ledger = Ledger(engine)
    topology = Topology(services.namespace)
    connection = await amqp_connection(services.broker_url)
    client = redis.Redis.from_url(services.redis_url)
    bus = RedisResultBus(client, topology)
    await bus.start()
    usage = RabbitUsageQueue(connection, topology)
    dead = RabbitDeadLetters(connection, topology)
    dead.RETRY_DELAY = 0.05
    reader = DeadLetterReader(bus, usage, abandoned_after=1.0)
    account_id = await ledger.create_account("dead letters", GRANT)  # type: ignore[arg-type]
    key_id = await ledger.create_key(account_id, "dead letters", uuid.uuid4().hex, "gz-dead")
    # No sweep while the tests run: every hold closed here was closed by the reader.
    consumer = SettlementConsumer(ledger, MemoryBalances(LedgerSnapshots(engine)), usage, sweep_interval=3600)
    tasks = [asyncio.create_task(consumer.run()), asyncio.create_task(dead.serve(reader.read))]
    try:
        # A letter published before the reader has declared its exchange
        # and queue would be refused, or routed nowhere.
        for queue in (topology.dead_queue, topology.usage_queue):
            await consumed(connection, queue)
        yield Billing(topology, connection, ledger, bus, RabbitJobQueue(connection, topology), dead, reader,
                      account_id, key_id)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bus.close()
        keys = [key async for key in client.scan_iter(f"{topology.namespace}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await connection.close()
        await engine.dispose()


async def consumed(connection: AbstractRobustConnection, queue: str, timeout: float = 10) -> None:
    """Waits until ``queue`` exists and has a consumer."""
    deadline = time.monotonic() + timeout
    while True:
        channel = await connection.channel()
        try:
            if (await channel.declare_queue(queue, passive=True)).declaration_result.consumer_count:
                return
        except ChannelNotFoundEntity:
            pass  # not declared yet (the failed passive declaration closed the channel)
        finally:
            if not channel.is_closed:
                await channel.close()
        assert time.monotonic() < deadline, f"nothing consumes {queue}"
        await asyncio.sleep(0.05)


async def next_event(inbox: Inbox, timeout: float = 10) -> StreamEvent:
    return await inbox.next(timeout)


async def reject_after(billing: Billing, job: Job, mark: JobMark | None) -> None:
    """A worker takes ``job``, marks it so, and fails to report it: the
    queue rejects it (as when its usage event cannot be published)."""
    taken = asyncio.Event()

    async def handle(item: Job, redelivered: bool) -> None:
        if mark is not None:
            await billing.bus.mark(item.id, mark, item.state_ttl())
        taken.set()
        raise RuntimeError("the usage queue is unreachable")

    server = asyncio.create_task(billing.jobs.serve(job.provider, 1, handle))
    try:
        await billing.jobs.enqueue(job)
        await asyncio.wait_for(taken.wait(), 10)
        await asyncio.sleep(0.2)  # its rejection goes out once the handler has raised
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def test_a_job_expired_in_a_queue_with_no_worker_is_released_at_once(billing: Billing) -> None:
    before = await billing.balance()
    job = await billing.job(ttl=1)
    inbox = await billing.bus.subscribe(job.id)
    await billing.jobs.enqueue(job)  # provider p has no worker: the job expires at the head of its queue

    event = await next_event(inbox)
    assert event["kind"] == "error" and event["data"]["status"] == 504, event
    assert "queued" in event["data"]["message"]
    rows, after = await billing.settled_once(job)
    assert rows == 1, "settled at zero through the usage queue (the sweeper writes no usage row)"
    assert after == before, "the hold released, nothing charged"
    assert await billing.bus.marked(job.id) == JobMark(state="done", attempt=0), "a late copy never runs"
    await inbox.close()


async def test_an_answered_job_that_was_rejected_is_charged_once(billing: Billing) -> None:
    before = await billing.balance()
    job = await billing.job()
    inbox = await billing.bus.subscribe(job.id)
    await reject_after(billing, job, JobMark(state="answered", usage=USAGE, attempt=0))

    rows, after = await billing.settled_once(job)
    assert rows == 1
    assert after == Balance(before.available - COST, before.held)
    with pytest.raises(TimeoutError):
        await inbox.next(0.5)  # the client had its answer: it hears nothing more
    await inbox.close()

    # Another copy of the same dead letter (a second copy of the job died
    # too): it is settled already, so it changes nothing.
    await billing.dead_copy(job)
    await billing.dead_copy(job, reason="expired")
    await asyncio.sleep(0.5)
    assert await billing.settled_once(job) == (1, after)


async def test_a_dead_letter_read_twice_before_it_was_marked_done_charges_once(billing: Billing) -> None:
    before = await billing.balance()
    job = await billing.job()
    answered = JobMark(state="answered", usage=USAGE, attempt=0)
    await billing.bus.mark(job.id, answered, 60)
    letter = DeadLetter(job, "rejected", billing.topology.job_queue("p"))

    # Two readers (two billing processes) at once, then a redelivery of it
    # after a reader that died between reporting and marking it done.
    await asyncio.gather(billing.reader.read(letter), billing.reader.read(letter))
    await billing.bus.mark(job.id, answered, 60)
    await billing.reader.read(letter)

    assert await billing.settled_once(job) == (1, Balance(before.available - COST, before.held))
    assert await billing.bus.marked(job.id) == JobMark(state="done", attempt=0)


async def test_duplicated_dead_letters_of_an_expired_job_release_it_once(billing: Billing) -> None:
    before = await billing.balance()
    job = await billing.job(ttl=0.5)
    for _ in range(2):  # e.g. a hand-off redone after its sender died
        await billing.jobs.enqueue(job)
    rows, after = await billing.settled_once(job)
    await asyncio.sleep(0.5)  # the second copy is read too
    assert (rows, after) == (1, before)
    assert await billing.settled_once(job) == (1, before)


async def test_a_job_handed_to_a_later_attempt_is_left_to_it(billing: Billing) -> None:
    before = await billing.balance()
    job = await billing.job()
    handed = JobMark(state="handed_off", attempt=1)
    await billing.bus.mark(job.id, handed, 60)

    await billing.reader.read(DeadLetter(job, "expired", billing.topology.job_queue("p")))
    assert await billing.bus.marked(job.id) == handed, "the later attempt's mark is unchanged"
    assert await billing.balance() == Balance(before.available - HOLD, before.held + HOLD), "still held for it"

    # That attempt never started and expired too: its own dead letter settles the job.
    onward = job.model_copy(update={"attempt": 1})
    await billing.reader.read(DeadLetter(onward, "expired", billing.topology.job_queue("q")))
    assert await billing.settled_once(job) == (1, before)
    assert await billing.bus.marked(job.id) == JobMark(state="done", attempt=1)


async def test_a_started_job_is_left_to_its_worker_until_its_deadline_has_passed(billing: Billing) -> None:
    before = await billing.balance()
    finished, abandoned = await billing.job(ttl=0.5), await billing.job(ttl=0.5)
    for job in (finished, abandoned):
        await billing.bus.mark(job.id, JobMark(state="started", attempt=0), 60)
    inbox = await billing.bus.subscribe(abandoned.id)

    async def worker_finishes() -> None:
        """The worker that lost its channel still ends its job, and reports it."""
        await asyncio.sleep(0.5)
        await billing.bus.mark(finished.id, JobMark(state="answered", usage=USAGE, attempt=0), 60)
        await billing.ledger.settle(UsageEvent.of(finished, USAGE))
        await billing.bus.mark(finished.id, JobMark(state="done", attempt=0), 60)

    letters = [DeadLetter(job, "expired", billing.topology.job_queue("p")) for job in (finished, abandoned)]
    await asyncio.gather(worker_finishes(), *(billing.reader.read(letter) for letter in letters))

    event = await next_event(inbox)
    assert event["kind"] == "error" and event["data"]["status"] == 502, "its worker stopped: not a queue timeout"
    await inbox.close()
    assert await billing.settled_once(abandoned) == (1, Balance(before.available - COST, before.held))


async def test_what_is_not_a_job_is_parked_and_the_next_letter_still_read(billing: Billing) -> None:
    channel = await billing.connection.channel()
    exchange = await channel.get_exchange(billing.topology.dead_exchange)
    await exchange.publish(aio_pika.Message(b'{"job_id": "not a job"}', message_id="poison"), routing_key="")
    before = await billing.balance()
    job = await billing.job(ttl=0.5)
    await billing.jobs.enqueue(job)

    message = await poll(await channel.declare_queue(billing.topology.parked_queue, durable=True))
    assert message.message_id == "poison" and message.body == b'{"job_id": "not a job"}'
    await message.ack()
    assert await billing.settled_once(job) == (1, before)
    await channel.close()


async def test_a_letter_that_keeps_failing_is_read_again_then_parked(billing: Billing) -> None:
    # Its own namespace, so that no other reader takes the letter.
    topology = Topology(f"gztest{uuid.uuid4().hex[:10]}")
    reader = RabbitDeadLetters(billing.connection, topology)
    reader.RETRY_DELAY, reader.MAX_TRIES = 0.01, 3
    tries: list[str] = []

    async def failing(letter: DeadLetter) -> None:
        tries.append(letter.job.id)
        raise RuntimeError("the result bus is unreachable")

    channel = await billing.connection.channel()
    dead = await channel.declare_exchange(topology.dead_exchange, aio_pika.ExchangeType.FANOUT, durable=True)
    await (await channel.declare_queue(topology.dead_queue, durable=True)).bind(dead)
    parked = await channel.declare_queue(topology.parked_queue, durable=True)
    serving = asyncio.create_task(reader.serve(failing))
    try:
        job = await billing.job()
        await publish_dead_copy(billing.connection, topology, job)
        message = await poll(parked)
        assert message.message_id == job.id and message.body == job.model_dump_json().encode()
        assert message.headers["x-death"][0]["reason"] == "rejected", "parked as it came"
        await message.ack()
        assert tries == [job.id] * 3
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        for name in (topology.dead_queue, topology.parked_queue):
            await channel.queue_delete(name)
        await channel.exchange_delete(topology.dead_exchange)
        await channel.close()
