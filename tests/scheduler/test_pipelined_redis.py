"""The shared Redis client's own pipelining, against the real Redis: the
commands of many tasks go over one connection together, each caller gets
its own reply or error, order holds, scripts survive a flushed script
cache, and a lost connection fails every waiting command with an error the
stores translate as before."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
from redis.exceptions import ConnectionError, ResponseError

from scheduler.pipelined_redis import PipelinedRedis
from tests.support.services import REDIS_URL, require_services
from tests.support.tcp_proxy import tcp_proxy


@pytest.fixture
async def client() -> AsyncIterator[PipelinedRedis]:
    require_services()
    name = f"gztest-pipelined-{uuid.uuid4().hex[:8]}"
    pool = redis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=64, client_name=name)
    pipelined = PipelinedRedis.from_pool(pool)
    try:
        yield pipelined
    finally:
        keys = [key async for key in pipelined.scan_iter(f"{name}:*")]
        if keys:
            await pipelined.delete(*keys)
        await pipelined.aclose()


def prefix(client: PipelinedRedis) -> str:
    return str(client.connection_pool.connection_kwargs["client_name"])


async def connections_of(client: PipelinedRedis) -> int:
    async with redis.Redis.from_url(REDIS_URL) as admin:
        listed = await admin.client_list()
    return sum(1 for entry in listed if entry["name"] == prefix(client))


async def test_many_tasks_share_one_connection_and_each_gets_its_own_reply(client: PipelinedRedis) -> None:
    keys = [f"{prefix(client)}:{index}" for index in range(200)]
    await asyncio.gather(*(client.set(key, index) for index, key in enumerate(keys)))
    got = await asyncio.gather(*(client.get(key) for key in keys))
    assert got == [str(index).encode() for index in range(200)]
    # A plain client would have opened a connection per command in flight (up to its pool's 64).
    assert await connections_of(client) == 1


async def test_an_error_is_its_own_commands_alone(client: PipelinedRedis) -> None:
    listed = f"{prefix(client)}:list"
    await client.rpush(listed, "a")
    replies = await asyncio.gather(client.incr(listed), client.llen(listed), client.get(f"{prefix(client)}:none"),
                                   return_exceptions=True)
    assert isinstance(replies[0], ResponseError) and "WRONGTYPE" in str(replies[0])
    assert replies[1:] == [1, None]


async def test_commands_run_in_the_order_they_were_issued(client: PipelinedRedis) -> None:
    counter = f"{prefix(client)}:counter"
    replies = await asyncio.gather(*(client.incr(counter) for _ in range(500)))
    assert replies == list(range(1, 501))


async def test_a_script_runs_after_the_script_cache_was_flushed(client: PipelinedRedis) -> None:
    script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    key = f"{prefix(client)}:scripted"
    assert await script(keys=[key], args=[2]) == 2
    async with redis.Redis.from_url(REDIS_URL) as admin:
        await admin.script_flush()  # as a restarted Redis would have lost it
    assert await asyncio.gather(*(script(keys=[key], args=[1]) for _ in range(3))) == [3, 4, 5]


async def test_a_lost_connection_fails_every_waiting_command_and_the_next_ones_succeed() -> None:
    require_services()
    async with tcp_proxy("127.0.0.1", 6379) as proxy:
        pool = redis.BlockingConnectionPool.from_url(f"redis://127.0.0.1:{proxy.port}/0", max_connections=8,
                                                     socket_timeout=1.0, socket_connect_timeout=1.0)
        client = PipelinedRedis.from_pool(pool)
        try:
            assert await client.ping()
            await proxy.cut()
            failed = await asyncio.gather(*(client.get("anything") for _ in range(20)), return_exceptions=True)
            assert all(isinstance(reply, (ConnectionError, TimeoutError, OSError)) for reply in failed), failed
            proxy.restore()
            assert await asyncio.gather(*(client.ping() for _ in range(20))) == [True] * 20
        finally:
            await client.aclose()
