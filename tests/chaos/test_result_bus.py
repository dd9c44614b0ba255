"""Losing the Redis subscription ends the affected streams with a clear
error, and the bus recovers for the next jobs."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from scheduler.result_bus import Inbox
from scheduler.result_bus.redis import RedisResultBus
from scheduler.topology import Topology
from schema.errors import BusUnavailable, StreamBroken
from tests.support.services import REDIS_URL, require_services
from tests.support.tcp_proxy import tcp_proxy


async def streaming(bus: RedisResultBus, job_id: str) -> Inbox:
    """An open stream on ``bus``: its first event has arrived."""
    inbox = await bus.subscribe(job_id)
    await bus.publish({"job": job_id, "seq": 0, "kind": "chunk", "data": {"n": 0}}, to=bus.reply_to)
    assert (await inbox.next(5))["data"] == {"n": 0}
    return inbox


async def fails_then_recovers(bus: RedisResultBus, inbox: Inbox) -> None:
    """``inbox``'s stream ends with the lost subscription, and the bus, once
    it has its subscription back (it refuses jobs until then, and
    resubscribes in the background), carries a new job's events."""
    with pytest.raises(StreamBroken, match="result bus"):
        await inbox.next(5)
    for _ in range(50):
        try:
            fresh = await bus.subscribe("j2")
            break
        except BusUnavailable:
            await asyncio.sleep(0.1)
    else:
        raise AssertionError("the result bus did not resubscribe within 5 s")
    await bus.publish({"job": "j2", "seq": 0, "kind": "end", "data": {}}, to=bus.reply_to)
    assert (await fresh.next(5))["kind"] == "end"


async def test_lost_subscription_fails_open_streams_then_recovers() -> None:
    require_services()
    name = f"gztest-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS_URL, client_name=name)
    admin = redis.Redis.from_url(REDIS_URL)
    bus = RedisResultBus(client, Topology(name))
    await bus.start()
    try:
        inbox = await streaming(bus, "j1")

        for entry in await admin.client_list():
            if entry.get("name") == name and "subscribe" in entry.get("cmd", ""):
                await admin.client_kill_filter(_id=entry["id"])

        await fails_then_recovers(bus, inbox)
    finally:
        await bus.close()
        await client.aclose()
        await admin.aclose()


async def test_a_subscription_redis_drops_fails_open_streams_at_once_then_is_renewed(
        caplog: pytest.LogCaptureFixture) -> None:
    """Redis drops a subscriber that reads too slowly (its output buffer
    limit) and takes the next connection at once; what was published
    meanwhile is gone. The open streams must fail then, not wait for a gap
    at their next event (or never see one), and the bus subscribes again."""
    require_services()
    name = f"gztest-{uuid.uuid4().hex[:8]}"
    async with tcp_proxy("127.0.0.1", 6379) as proxy:
        client = redis.Redis.from_url(f"redis://127.0.0.1:{proxy.port}/0", retry=Retry(NoBackoff(), 1))
        bus = RedisResultBus(client, Topology(name))
        await bus.start()
        try:
            inbox = await streaming(bus, "j1")

            await proxy.cut()  # the server side closes the connection, as Redis does over the limit
            proxy.restore()  # and takes the next one at once

            await fails_then_recovers(bus, inbox)
        finally:
            await bus.close()
            await client.aclose()
    print("\n" + "\n".join(record.getMessage() for record in caplog.records if "subscription" in record.getMessage()))
