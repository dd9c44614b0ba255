"""The result buses: the Redis one answers every job of an ingress on that
ingress's one channel; both publish a job's final event atomically with its
mark."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as redis

from scheduler.result_bus import ResultBus
from scheduler.result_bus.redis import RedisResultBus
from scheduler.topology import Topology
from schema.jobs import JobMark, StreamEvent, Usage
from tests.support.services import REDIS_URL, require_services


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
