"""The result buses: the Redis one answers every job of an ingress on that
ingress's one channel; both publish a job's final event atomically with its
mark."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import orjson
import pytest
import redis.asyncio as redis

from scheduler.result_bus import ResultBus
from scheduler.result_bus.redis import RedisResultBus
from scheduler.topology import Topology
from schema.errors import BusUnavailable
from schema.jobs import Job, JobMark, Price, Route, StreamEvent, Usage
from tests.support.services import REDIS_URL, require_services
from tests.support.tcp_proxy import tcp_proxy
from workers.pool.events import JobRun


async def subscribers(admin: redis.Redis, channel: str) -> int:
    return dict(await admin.pubsub_numsub(channel))[channel.encode()]


async def test_jobs_are_answered_on_the_one_channel_of_their_ingress() -> None:
    """No SUBSCRIBE per job: the process's channel carries every job's events
    to its inbox, and a closed inbox drops its job's events."""
    require_services()
    topology = Topology(f"gztest{uuid.uuid4().hex[:8]}")
    client, admin = redis.Redis.from_url(REDIS_URL), redis.Redis.from_url(REDIS_URL)
    bus = RedisResultBus(client, topology)
    await bus.start()
    try:
        assert bus.reply_to is not None and await subscribers(admin, bus.reply_to) == 1
        inboxes = [await bus.subscribe(f"j{n}") for n in range(20)]
        assert await subscribers(admin, topology.result_channel("j0")) == 0
        for n in (7, 3):
            await bus.publish({"job": f"j{n}", "seq": 0, "kind": "end", "data": {"n": n}}, to=bus.reply_to)
        assert (await inboxes[3].next(2.0))["data"] == {"n": 3}
        assert (await inboxes[7].next(2.0))["data"] == {"n": 7}
        await inboxes[0].close()
        await bus.publish({"job": "j0", "seq": 0, "kind": "end", "data": {}}, to=bus.reply_to)  # nobody is delivered to
        await bus.publish({"job": "j1", "seq": 0, "kind": "end", "data": {}}, to=bus.reply_to)
        assert (await inboxes[1].next(2.0))["kind"] == "end"
        with pytest.raises(TimeoutError):
            await inboxes[0].next(0.2)
    finally:
        await bus.close()
        await client.aclose()
        await admin.aclose()


async def test_a_mark_publishes_its_events_with_it(bus: ResultBus) -> None:
    """The final event goes out with the `answered` mark, or not at all."""
    inbox = await bus.subscribe("j")
    final: StreamEvent = {"job": "j", "seq": 0, "kind": "response", "data": {"id": "x"}}
    answered = JobMark(state="answered", usage=Usage(input_tokens=3, output_tokens=4), attempt=0)
    assert await bus.mark("j", answered, 60, publish=[final], to=bus.reply_to) is None
    assert await inbox.next(2.0) == final
    assert await bus.mark("j", JobMark(state="done", attempt=0), 60) == answered


async def test_a_superseded_mark_publishes_nothing(bus: ResultBus) -> None:
    inbox = await bus.subscribe("j")
    await bus.mark("j", JobMark(state="handed_off", attempt=1), 60)
    stale: StreamEvent = {"job": "j", "seq": 0, "kind": "response", "data": {"stale": True}}
    before = await bus.mark("j", JobMark(state="answered", attempt=0), 60, publish=[stale], to=bus.reply_to)
    assert before == JobMark(state="handed_off", attempt=1), "the later attempt's mark stays"
    await bus.publish({"job": "j", "seq": 0, "kind": "end", "data": {}}, to=bus.reply_to)
    assert (await inbox.next(2.0))["kind"] == "end", "the stale attempt's event was never published"


async def test_the_events_a_turn_posts_go_out_as_one_message_per_ingress_in_order() -> None:
    """What every job of a worker posts in one event-loop turn is one
    PUBLISH per ingress; a job's events keep their order across turns
    though nobody waits between posts; each inbox gets only its own."""
    require_services()
    topology = Topology(f"gztest{uuid.uuid4().hex[:8]}")
    client, watcher = redis.Redis.from_url(REDIS_URL), redis.Redis.from_url(REDIS_URL)
    ingress, worker = RedisResultBus(client, topology), RedisResultBus(client, topology)
    await ingress.start()
    watching = watcher.pubsub()
    try:
        assert ingress.reply_to is not None
        await watching.subscribe(ingress.reply_to)
        assert (await watching.get_message(timeout=2.0) or {}).get("type") == "subscribe"
        inboxes = {job: await ingress.subscribe(job) for job in ("a", "b", "c")}

        posted = {worker.post(({"job": job, "seq": 0, "kind": "chunk", "data": {}},), to=ingress.reply_to)
                  for job in ("a", "b", "c")}
        assert len(posted) == 1, "one turn's posts share one publish"
        await posted.pop()
        message = await watching.get_message(ignore_subscribe_messages=True, timeout=2.0)
        assert message is not None and [event["job"] for event in orjson.loads(message["data"])] == ["a", "b", "c"]
        assert await watching.get_message(ignore_subscribe_messages=True, timeout=0.2) is None

        last = None
        for seq in range(1, 200):  # a post per turn, never awaited: a batch per round trip
            last = worker.post(({"job": "b", "seq": seq, "kind": "chunk", "data": {}},), to=ingress.reply_to)
            await asyncio.sleep(0)
        assert last is not None
        await last
        assert [(await inboxes["b"].next(2.0))["seq"] for _ in range(200)] == list(range(200))
        for job in ("a", "c"):
            assert (await inboxes[job].next(2.0))["seq"] == 0
            assert inboxes[job].pending() == 0
    finally:
        await watching.aclose()
        await ingress.close()
        await worker.close()
        await client.aclose()
        await watcher.aclose()


async def test_a_post_redis_refuses_fails_its_future_and_the_job_knows_its_events_were_lost() -> None:
    require_services()
    async with tcp_proxy("127.0.0.1", 6379) as proxy:
        client = redis.Redis.from_url(f"redis://127.0.0.1:{proxy.port}/0")
        bus = RedisResultBus(client, Topology(f"gztest{uuid.uuid4().hex[:8]}"))
        job = Job(account_id=1, key_id=1, model="mock/echo", routes=[Route(provider="mock", upstream_model="echo")],
                  payload={}, deadline=time.time() + 60, price=Price(input_per_mtok=Decimal(1),
                                                                      output_per_mtok=Decimal(2)),
                  reply_to=f"gztest-{uuid.uuid4().hex[:8]}")
        run = JobRun(job, bus)
        try:
            run.emit({"n": 0})
            await run.flush()
            assert run.lost is None
            await proxy.cut()
            run.emit({"n": 1})
            await run.flush()
            assert isinstance(run.lost, BusUnavailable)
        finally:
            await bus.close()
            await client.aclose()


async def test_a_message_that_is_not_events_is_dropped_and_the_reader_reads_on() -> None:
    require_services()
    topology = Topology(f"gztest{uuid.uuid4().hex[:8]}")
    client = redis.Redis.from_url(REDIS_URL)
    bus = RedisResultBus(client, topology)
    await bus.start()
    try:
        assert bus.reply_to is not None
        inbox = await bus.subscribe("j")
        for stray in (b"not json", b'{"job": "j"}', b"[1]", b'[{"seq": 0}]'):
            await client.publish(bus.reply_to, stray)
        await bus.publish({"job": "j", "seq": 0, "kind": "end", "data": {}}, to=bus.reply_to)
        assert (await inbox.next(2.0))["kind"] == "end"
    finally:
        await bus.close()
        await client.aclose()
