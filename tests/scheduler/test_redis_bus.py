"""The Redis result bus leaves a finished job's channel, in the background."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as redis

from scheduler.redis_bus import RedisResultBus
from scheduler.topology import Topology
from tests.support.services import REDIS_URL, require_services


async def subscribers(admin: redis.Redis, channel: str) -> int:
    return dict(await admin.pubsub_numsub(channel))[channel.encode()]


async def test_closed_subscriptions_leave_their_channels() -> None:
    require_services()
    topology = Topology(f"gztest{uuid.uuid4().hex[:8]}")
    client, admin = redis.Redis.from_url(REDIS_URL), redis.Redis.from_url(REDIS_URL)
    bus = RedisResultBus(client, topology)
    await bus.start()
    try:
        inboxes = [await bus.subscribe(f"j{n}") for n in range(20)]
        assert await subscribers(admin, topology.result_channel("j0")) == 1
        for inbox in inboxes:
            await inbox.close()
        await bus.publish({"job": "j0", "seq": 0, "kind": "end", "data": {}})  # nobody is delivered to
        for _ in range(100):
            counts = [await subscribers(admin, topology.result_channel(f"j{n}")) for n in range(20)]
            if not any(counts):
                break
            await asyncio.sleep(0.02)
        assert counts == [0] * 20
    finally:
        await bus.close()
        await client.aclose()
        await admin.aclose()
