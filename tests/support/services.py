"""The real RabbitMQ, Redis and PostgreSQL on this machine, for the
distributed runs: reachability, a fresh database and namespace per session,
and cleanup."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import aio_pika
import asyncpg
import pytest
import redis.asyncio as redis

from scheduler.priority import Work
from scheduler.topology import Topology

BROKER_URL = os.environ.get("GATEWAYZ_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("GATEWAYZ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get("GATEWAYZ_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SERVICES = {"RabbitMQ": ("127.0.0.1", 5672), "Redis": ("127.0.0.1", 6379), "PostgreSQL": ("127.0.0.1", 5432)}


def require_services() -> None:
    """Skip when a service is down, unless CI requires them (then fail)."""
    down = []
    for name, address in SERVICES.items():
        try:
            socket.create_connection(address, timeout=2).close()
        except OSError:
            down.append(name)
    if down:
        message = f"real services unreachable: {', '.join(down)}"
        if os.environ.get("GATEWAYZ_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


@dataclass(frozen=True)
class Distributed:
    broker_url: str
    redis_url: str
    database_url: str
    namespace: str

    def environ(self) -> dict[str, str]:
        return {
            "GATEWAYZ_BROKER_URL": self.broker_url,
            "GATEWAYZ_REDIS_URL": self.redis_url,
            "GATEWAYZ_DATABASE_URL": self.database_url,
            "GATEWAYZ_NAMESPACE": self.namespace,
        }


@contextmanager
def distributed_services(providers: list[str]) -> Iterator[Distributed]:
    require_services()
    suffix = uuid.uuid4().hex[:10]
    database = f"gatewayz_test_{suffix}"
    asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
    base = POSTGRES_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        with fresh_namespace(providers, f"gztest{suffix}") as namespace:
            yield Distributed(BROKER_URL, REDIS_URL, f"{base}/{database}", namespace)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


@contextmanager
def fresh_namespace(providers: list[str], namespace: str | None = None) -> Iterator[str]:
    """A namespace of queues, exchanges and Redis keys of its own, deleted after."""
    namespace = namespace or f"gztest{uuid.uuid4().hex[:10]}"
    try:
        yield namespace
    finally:
        asyncio.run(delete_namespace(namespace, providers))
        asyncio.run(_delete_redis_keys(namespace))


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def delete_namespace(namespace: str, providers: list[str]) -> None:
    """Delete the session's queues and exchanges (names from scheduler.topology)."""
    from scheduler.topology import Topology

    topology = Topology(namespace)
    connection = await aio_pika.connect(BROKER_URL)
    async with connection:
        for provider in providers:
            channel = await connection.channel()
            for work in Work:
                await channel.queue_delete(topology.job_queue(provider, work))
        channel = await connection.channel()
        prober = topology.prober_queue  # dramatiq's, with its delay (.XQ) and dead-letter (.DQ) queues
        for queue in (topology.usage_queue, topology.dead_queue, topology.parked_queue, prober, f"{prober}.DQ",
                      f"{prober}.XQ"):
            await channel.queue_delete(queue)
        for exchange in (topology.jobs_exchange, topology.dead_exchange):
            await channel.exchange_delete(exchange)


@asynccontextmanager
async def redis_namespace(prefix: str = "gztest") -> AsyncIterator[tuple[redis.Redis, Topology]]:
    """A client of the real Redis and a namespace of its own, whose keys are deleted afterwards."""
    require_services()
    client = redis.Redis.from_url(REDIS_URL)
    topology = Topology(f"{prefix}{uuid.uuid4().hex[:10]}")
    try:
        yield client, topology
    finally:
        keys = [key async for key in client.scan_iter(f"{topology.namespace}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def _delete_redis_keys(namespace: str) -> None:
    """Delete the session's Redis keys (saved provider model lists; job marks expire by themselves)."""
    topology = Topology(namespace)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        await client.delete(topology.provider_listings, topology.provider_listings_version)
    finally:
        await client.aclose()
