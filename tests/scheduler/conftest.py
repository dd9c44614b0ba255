"""Fixtures for the scheduler's tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from scheduler.result_bus import ResultBus
from scheduler.result_bus.memory import MemoryResultBus
from scheduler.result_bus.redis import RedisResultBus
from scheduler.topology import Topology
from tests.support.services import REDIS_URL, require_services


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[ResultBus]:
    """Each result bus, started (subscriptions work), in a namespace of its own."""
    if request.param == "memory":
        yield MemoryResultBus()
        return
    require_services()
    client = redis.Redis.from_url(REDIS_URL)
    redis_bus = RedisResultBus(client, Topology(f"gztest{uuid.uuid4().hex[:8]}"))
    await redis_bus.start()
    try:
        yield redis_bus
    finally:
        await redis_bus.close()
        await client.aclose()
