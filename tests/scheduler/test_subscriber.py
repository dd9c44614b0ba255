"""The ingress's lean result subscription (``scheduler.result_bus.subscriber``)
against the real Redis: every message of a burst arrives whole and in order
however the reads split it, it authenticates as the client does, and a
refused login is an outage, not a hang."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as redis

from scheduler.result_bus.redis import RedisResultBus
from scheduler.result_bus.subscriber import READ_SIZE, Subscriber
from scheduler.topology import Topology
from schema.errors import BusUnavailable
from tests.support.services import REDIS_URL, require_services


async def test_a_burst_larger_than_a_read_arrives_whole_and_in_order() -> None:
    """Publishes pipelined faster than they are read: most reads end inside
    a message, and each is delivered once, whole, in the order published."""
    require_services()
    channel = f"gztest-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS_URL)
    subscriber = await Subscriber.open(client, channel)
    got: list[bytes] = []
    reading = asyncio.create_task(subscriber.read(got.append))
    try:
        sent = [f"{n}:".encode() + bytes([65 + n % 26]) * (997 + n % 13) for n in range(600)]
        assert sum(map(len, sent)) > 8 * READ_SIZE
        async with client.pipeline(transaction=False) as pipe:
            for payload in sent:
                pipe.publish(channel, payload)
            assert await pipe.execute() == [1] * len(sent)
        for _ in range(100):
            if len(got) == len(sent):
                break
            await asyncio.sleep(0.05)
        assert got == sent
    finally:
        reading.cancel()
        subscriber.close()
        await client.aclose()


async def test_it_logs_in_as_the_client_does_and_a_refused_login_is_an_outage() -> None:
    require_services()
    admin = redis.Redis.from_url(REDIS_URL)
    user, password = f"gztest-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], channels=["*"], commands=["+@all"],
                            keys=["*"])
    topology = Topology(f"gztest{uuid.uuid4().hex[:8]}")
    client = redis.Redis.from_url(f"redis://{user}:{password}@127.0.0.1:6379/0", client_name=user)
    wrong = redis.Redis.from_url(f"redis://{user}:not-{password}@127.0.0.1:6379/0")
    bus = RedisResultBus(client, topology)
    try:
        await bus.start()
        assert bus.reply_to is not None
        listed = [entry for entry in await admin.client_list() if entry.get("name") == user]
        assert [entry["user"] for entry in listed if "subscribe" in entry["cmd"]] == [user]
        inbox = await bus.subscribe("j")
        await bus.publish({"job": "j", "seq": 0, "kind": "end", "data": {}}, to=bus.reply_to)
        assert (await inbox.next(5))["kind"] == "end"

        with pytest.raises(BusUnavailable, match="refused"):
            await RedisResultBus(wrong, topology).start()
    finally:
        await bus.close()
        await admin.acl_deluser(user)
        for opened in (client, wrong, admin):
            await opened.aclose()
