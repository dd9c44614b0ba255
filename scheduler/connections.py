"""Every connection this process opens to Redis and RabbitMQ, built from its
settings in one place, as arq's ``connections.py`` does.

``Connections`` opens each client the first time a role asks for it, so a
process holds only the connections its role uses, and closes them all when
it closes. Each client's pool size, timeouts and retries say what it is for:
- ``shared_redis()``: the shared client (result bus, marks, circuits, health,
  balances, model lists). It pipelines on its own
  (``scheduler.pipelined_redis``): the commands of many jobs and requests
  share round trips. A blocking pool: a burst waits for a connection
  instead of failing.
- ``stats_redis()`` and ``limits_redis()``: advice that must not hold a
  request or a job when Redis stalls (pool statistics, rate limits): small
  pools of their own and one-second timeouts, so they never queue behind
  the shared pool in an outage.
- ``amqp()``: one robust RabbitMQ connection for the job, usage and
  dead-letter queues.

``redis_socket`` opens a bare socket to a client's server, for the
ingress's result subscription, which reads the protocol itself.

Two clients live outside it, because they run on another event loop or
thread than the role's: ``probe_redis`` (the prober's health store) and
``dramatiq_broker`` (the prober's actor).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
import redis.asyncio as redis
from aio_pika.abc import AbstractRobustConnection
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from scheduler.pipelined_redis import PipelinedRedis
from schema.settings import Settings

SHARED_POOL = 256  # connections of the shared Redis client
SHARED_WAIT = 10.0  # seconds a caller waits for one of them
STATS_POOL = 32
LIMITS_POOL = 64
ADVICE_TIMEOUT = 1.0  # seconds: connecting to and answering from the advice clients
ADVICE_WAIT = 2.0
PROBE_TIMEOUT = 2.0


def _retry_once() -> Retry:
    # One immediate retry replaces a pooled connection Redis closed on restart.
    return Retry(NoBackoff(), 1)


def _shared_client(url: str) -> redis.Redis:
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=SHARED_POOL, timeout=SHARED_WAIT,
                                                 retry=_retry_once())
    return PipelinedRedis.from_pool(pool)  # which it closes with itself


def _advice_client(url: str, *, max_connections: int) -> redis.Redis:
    """A client with its own small pool and short timeouts, for advice that
    must not hold a request or a job when Redis stalls."""
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=ADVICE_WAIT,
                                                 socket_timeout=ADVICE_TIMEOUT,
                                                 socket_connect_timeout=ADVICE_TIMEOUT, retry=_retry_once())
    return redis.Redis.from_pool(pool)


async def amqp_connection(url: str) -> AbstractRobustConnection:
    return await aio_pika.connect_robust(url, client_properties={"connection_name": "gatewayz"})


@asynccontextmanager
async def probe_redis(url: str) -> AsyncIterator[redis.Redis]:
    """A client of its own, for a caller on another event loop (the
    prober's): short timeouts, so a stalled Redis fails a round fast."""
    client = redis.Redis.from_url(url, socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT)
    try:
        yield client
    finally:
        await client.aclose()


def dramatiq_broker(url: str) -> RabbitmqBroker:
    """dramatiq's RabbitMQ broker (its own pika connections, per thread)."""
    return RabbitmqBroker(url=url)


async def redis_socket(client: redis.Redis, *,
                       limit: int = 1 << 16) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare connection to ``client``'s server, reached as its own
    connections reach it (host or Unix socket, its TLS context), for a
    reader that speaks the protocol itself
    (``scheduler.result_bus.subscriber``); keepalive on."""
    pool = client.connection_pool
    connection = pool.connection_class(**pool.connection_kwargs)  # configured, never connected: its address and TLS
    if isinstance(connection, redis.UnixDomainSocketConnection):
        return await asyncio.open_unix_connection(connection.path, limit=limit)
    if not isinstance(connection, redis.Connection):
        raise TypeError(f"no bare socket for a {type(connection).__name__}")
    context = connection.ssl_context.get() if isinstance(connection, redis.SSLConnection) else None
    reader, writer = await asyncio.open_connection(connection.host, connection.port, ssl=context, limit=limit)
    sock = writer.get_extra_info("socket")
    if sock is not None:  # a peer gone without a word is noticed in time
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return reader, writer


class Connections:
    """The Redis clients and the RabbitMQ connection of one process, each
    opened when first asked for; ``aclose`` closes those opened."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._redis: redis.Redis | None = None
        self._stats: redis.Redis | None = None
        self._limits: redis.Redis | None = None
        self._amqp: AbstractRobustConnection | None = None

    def shared_redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = _shared_client(self._require(self._settings.redis_url, "GATEWAYZ_REDIS_URL"))
        return self._redis

    def stats_redis(self) -> redis.Redis:
        if self._stats is None:
            self._stats = _advice_client(self._require(self._settings.redis_url, "GATEWAYZ_REDIS_URL"),
                                       max_connections=STATS_POOL)
        return self._stats

    def limits_redis(self) -> redis.Redis:
        """Where rate limits are counted: their own Redis, else the shared one's URL."""
        if self._limits is None:
            url = self._settings.rate_limit_redis_url or self._settings.redis_url
            self._limits = _advice_client(self._require(url, "GATEWAYZ_REDIS_URL"), max_connections=LIMITS_POOL)
        return self._limits

    async def amqp(self) -> AbstractRobustConnection:
        if self._amqp is None:
            self._amqp = await amqp_connection(self._require(self._settings.broker_url, "GATEWAYZ_BROKER_URL"))
        return self._amqp

    @staticmethod
    def _require(url: str | None, name: str) -> str:
        if not url:
            raise RuntimeError(f"{name} is not set: this process runs embedded")
        return url

    async def aclose(self) -> None:
        if self._amqp is not None:
            await self._amqp.close()
        for client in (self._redis, self._stats, self._limits):
            if client is not None:
                await client.aclose()
        self._redis = self._stats = self._limits = None
        self._amqp = None
