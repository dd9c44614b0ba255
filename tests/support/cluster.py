"""A distributed gateway as separate processes (ingress, workers, billing)
on the real services, and a streaming load against it, for chaos tests."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import redis.asyncio as redis

from scheduler.pool_stats.redis import RedisPoolStats
from scheduler.topology import Topology
from tests.support.processes import background, free_port, gatewayz, wait_until_healthy
from tests.support.services import Distributed, distributed_services

PROMPT = "slow one two three four five six"  # 7 words streamed 50 ms apart: a kill lands mid-stream
Outcome = tuple[str | None, str]  # (job id, "complete" | "error") as the client saw it


@dataclass
class Cluster:
    services: Distributed
    env: dict[str, str]
    key: str
    port: int
    directory: Path
    stack: contextlib.ExitStack
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def open_holds(self) -> int:
        """Holds not closed yet: in the ledger, or only in the balances (a
        hold the journal has not written, or never will: its job's
        settlement records it closed)."""
        in_ledger = self.query("SELECT count(*) AS n FROM holds WHERE NOT closed")[0]["n"]
        balance = httpx.get(f"{self.url}/user/balance", headers={"authorization": f"Bearer {self.key}"}, timeout=10)
        return int(in_ledger) + (1 if balance.json()["held_micros"] else 0)

    def wait_until_settled(self, timeout: float) -> int:
        """Poll until no hold is open; the open holds then."""
        deadline = time.monotonic() + timeout
        while (open_holds := self.open_holds()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return open_holds

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        return self.stack.enter_context(background(*args, env=self.env, cwd=self.directory,
                                                   log=self.directory / f"{name}.log"))

    def worker(self, name: str, provider: str = "fake") -> subprocess.Popen[bytes]:
        return self.start(name, "worker", "--provider", provider, "--concurrency", "8")

    def wait_for_workers(self, count: int, timeout: float = 30, provider: str = "fake") -> None:
        asyncio.run(_wait_for_consumers(self.services, count, timeout, provider))

    def wait_for_jobs_in_hand(self, worker: subprocess.Popen[bytes], timeout: float = 30,
                              provider: str = "fake") -> None:
        """Until the worker process's beat (every second) says it holds jobs."""
        asyncio.run(_wait_for_jobs_in_hand(self.services, worker.pid, timeout, provider))

    def load(self, requests: int, concurrency: int) -> threading.Thread:
        """Stream ``requests`` requests in the background; outcomes land in ``self.outcomes``."""
        runner = threading.Thread(target=lambda: self.outcomes.extend(
            asyncio.run(_load(self.base_url, self.key, requests, concurrency))))
        runner.start()
        return runner

    def query(self, statement: str) -> list[asyncpg.Record]:
        return asyncio.run(_query(self.services.database_url, statement))

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text()


@contextlib.contextmanager
def running_cluster(directory: Path, upstream: str, *, config: str | None = None,
                    providers: tuple[str, ...] = ("fake",), **settings: str) -> Iterator[Cluster]:
    """Migrated database, a key with 1 credit and an ingress; the test starts
    the workers and billing it wants to kill. ``config`` replaces the one
    provider ``fake`` at ``upstream`` (``providers`` names its providers)."""
    with distributed_services(list(providers)) as services, contextlib.ExitStack() as stack:
        path = _config_file(directory, upstream)
        if config is not None:
            path.write_text(config)
        env = {**services.environ(), "GATEWAYZ_KEY_SECRET": "cluster", "GATEWAYZ_DATA_DIR": str(directory),
               "GATEWAYZ_CONFIG": str(path), **settings}
        assert gatewayz("migrate", env=env, cwd=directory).returncode == 0
        created = gatewayz("keys", "create", "--name", "cluster", "--credits", "1", env=env, cwd=directory)
        key = created.stdout.split()[-1]
        cluster = Cluster(services, env, key, free_port(), directory, stack)
        ingress = cluster.start("ingress", "ingress", "--port", str(cluster.port))
        wait_until_healthy(f"http://127.0.0.1:{cluster.port}", ingress, directory / "ingress.log")
        yield cluster


def _config_file(directory: Path, upstream: str) -> Path:
    path = directory / "gatewayz.toml"
    path.write_text(
        f'[providers.fake]\nadapter = "openai"\nbase_url = "{upstream}/v1"\nmodels = ["fake-small"]\n\n'
        '[models."fake-small"]\nproviders = ["fake"]\ninput_price_per_mtok = 1.00\noutput_price_per_mtok = 2.00\n'
    )
    return path


async def _stream_one(client: httpx.AsyncClient) -> Outcome:
    body = {"model": "fake-small", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    try:
        async with client.stream("POST", "/chat/completions", json=body) as response:
            job_id = response.headers.get("x-gatewayz-job-id")
            if response.status_code != 200:
                await response.aread()
                return job_id, "error"
            lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    except httpx.HTTPError:
        return None, "error"
    if lines and lines[-1] == "data: [DONE]":
        assert not any('"error"' in line for line in lines)
        return job_id, "complete"
    assert lines and '"error"' in lines[-1], f"a stream that ended without [DONE] nor an error: {lines[-3:]}"
    return job_id, "error"


async def _load(base_url: str, key: str, requests: int, concurrency: int) -> list[Outcome]:
    slots = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, headers={"authorization": f"Bearer {key}"},
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one() -> Outcome:
            async with slots:
                return await _stream_one(client)

        return await asyncio.gather(*(one() for _ in range(requests)))


async def _wait_for_jobs_in_hand(services: Distributed, pid: int, timeout: float, provider: str) -> None:
    client = redis.Redis.from_url(services.redis_url)
    stats = RedisPoolStats(client, Topology(services.namespace))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            beats = (await stats.read(provider)).workers
            if any(beat.worker.split(":")[1] == str(pid) and beat.in_flight > 0 for beat in beats):
                return
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()
    raise AssertionError(f"worker {pid} never held a job")


async def _wait_for_consumers(services: Distributed, count: int, timeout: float, provider: str) -> None:
    connection = await aio_pika.connect(services.broker_url)
    async with connection:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                queue = await channel.declare_queue(Topology(services.namespace).job_queue(provider), passive=True)
                if queue.declaration_result.consumer_count >= count:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{count} workers never attached to the queue")


async def _query(url: str, statement: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return await connection.fetch(statement)
    finally:
        await connection.close()
