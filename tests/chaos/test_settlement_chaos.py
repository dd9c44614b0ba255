"""Chaos for money: workers and the billing consumer are SIGKILLed and
restarted under a steady streaming load, and usage events are delivered
twice. Afterwards every job is settled exactly once, completed jobs are
charged, interrupted jobs are not, no hold is left open, and the ledger
reconciles. The counts are printed for the record (``pytest -s``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from decimal import Decimal
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import pytest

from scheduler.topology import Topology
from schema.jobs import Price, Usage, UsageEvent
from tests.support.processes import background, free_port, gatewayz, wait_until_healthy
from tests.support.services import Distributed, distributed_services

REQUESTS, CONCURRENCY = 80, 12
GRANT = 1_000_000  # micro-credits
PROMPT = "slow one two three four five six"  # 7 words streamed 50 ms apart: kills land mid-stream


def config_file(tmp_path: Path, upstream: str) -> Path:
    path = tmp_path / "gatewayz.toml"
    path.write_text(
        f'[providers.fake]\nadapter = "openai"\nbase_url = "{upstream}/v1"\nmodels = ["fake-small"]\n\n'
        '[models."fake-small"]\nproviders = ["fake"]\ninput_price_per_mtok = 1.00\noutput_price_per_mtok = 2.00\n'
    )
    return path


async def stream_one(client: httpx.AsyncClient) -> tuple[str | None, str]:
    """One streaming request; ('complete' | 'error', job id) as the client saw it."""
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


async def load(base_url: str, key: str) -> list[tuple[str | None, str]]:
    slots = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, headers={"authorization": f"Bearer {key}"},
                                 limits=httpx.Limits(max_connections=CONCURRENCY)) as client:
        async def one() -> tuple[str | None, str]:
            async with slots:
                return await stream_one(client)

        return await asyncio.gather(*(one() for _ in range(REQUESTS)))


async def wait_for_consumers(services: Distributed, provider: str, count: int, timeout: float = 30) -> None:
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
    raise AssertionError(f"{count} consumers never attached to {provider}'s queue")


async def query(url: str, statement: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return await connection.fetch(statement)
    finally:
        await connection.close()


async def redeliver(services: Distributed, events: list[UsageEvent]) -> None:
    connection = await aio_pika.connect(services.broker_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        for event in events:
            await channel.default_exchange.publish(
                aio_pika.Message(event.model_dump_json().encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=Topology(services.namespace).usage_queue,
            )


def test_kill_workers_and_billing_under_load(tmp_path: Path, upstream: str) -> None:
    with distributed_services(["fake"]) as services, contextlib.ExitStack() as stack:
        env = {**services.environ(), "GATEWAYZ_KEY_SECRET": "chaos", "GATEWAYZ_DATA_DIR": str(tmp_path),
               "GATEWAYZ_CONFIG": str(config_file(tmp_path, upstream)), "GATEWAYZ_LOG_LEVEL": "warning"}
        assert gatewayz("migrate", env=env, cwd=tmp_path).returncode == 0
        key = gatewayz("keys", "create", "--name", "chaos", "--credits", "1", env=env, cwd=tmp_path).stdout.split()[-1]
        port = free_port()

        def start(name: str, *args: str):  # type: ignore[no-untyped-def]
            return stack.enter_context(background(*args, env=env, cwd=tmp_path, log=tmp_path / f"{name}.log"))

        ingress = start("ingress", "ingress", "--port", str(port))
        worker_args = ("worker", "--provider", "fake", "--concurrency", "8")
        first, second = start("worker-1", *worker_args), start("worker-2", *worker_args)
        billing = start("billing-1", "billing")
        wait_until_healthy(f"http://127.0.0.1:{port}", ingress, tmp_path / "ingress.log")
        asyncio.run(wait_for_consumers(services, "fake", 2))

        outcomes: list[tuple[str | None, str]] = []
        runner = threading.Thread(target=lambda: outcomes.extend(asyncio.run(load(f"http://127.0.0.1:{port}/v1", key))))
        runner.start()
        time.sleep(0.8)
        first.send_signal(signal.SIGKILL)  # mid-stream: its jobs are redelivered to worker-2
        start("worker-3", *worker_args)
        time.sleep(0.8)
        billing.send_signal(signal.SIGKILL)  # mid-batch: unacked usage events are redelivered
        time.sleep(0.5)
        start("billing-2", "billing")
        time.sleep(0.8)
        second.send_signal(signal.SIGKILL)
        runner.join(timeout=120)
        assert not runner.is_alive(), "the load did not finish: some request hung"

        # Everything settles: every job gets exactly one usage record.
        job_ids = {job for job, _ in outcomes if job}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            open_holds = asyncio.run(query(services.database_url, "SELECT count(*) AS n FROM holds WHERE NOT closed"))[0]["n"]
            if open_holds == 0:
                break
            time.sleep(0.2)
        assert open_holds == 0, "holds left open"

        records = {row["job_id"]: row for row in asyncio.run(query(services.database_url, "SELECT * FROM usage_records"))}
        charges = asyncio.run(query(services.database_url,
                                    "SELECT reference, count(*) AS n FROM ledger_transactions WHERE kind = 'charge' GROUP BY reference"))
        # Deliver every usage event a second time, as a broker may.
        duplicates = [UsageEvent(job_id=row["job_id"], account_id=row["account_id"], key_id=row["key_id"],
                                 provider=row["provider"], model=row["model"],
                                 usage=Usage(input_tokens=row["input_tokens"], output_tokens=row["output_tokens"]),
                                 price=Price(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2)))
                      for row in records.values()]
        asyncio.run(redeliver(services, duplicates))
        time.sleep(2.0)
        charges_after = asyncio.run(query(services.database_url,
                                          "SELECT count(*) AS n FROM ledger_transactions WHERE kind = 'charge'"))[0]["n"]
        balance = httpx.get(f"http://127.0.0.1:{port}/user/balance", headers={"authorization": f"Bearer {key}"}).json()
        reconciled = gatewayz("billing", "reconcile", env=env, cwd=tmp_path)

    completed = [job for job, outcome in outcomes if outcome == "complete"]
    failed = [job for job, outcome in outcomes if outcome == "error"]
    print(f"\nchaos: {len(outcomes)} jobs, {len(completed)} completed, {len(failed)} ended with an error; "
          f"{len(records)} settled, {sum(1 for r in records.values() if r['cost'] > 0)} charged; "
          f"{len(duplicates)} duplicate usage events delivered, {charges_after - len(charges)} charged twice")

    assert len(outcomes) == REQUESTS and completed and failed, "the kills should interrupt some jobs, not all"
    assert all(c["n"] == 1 for c in charges), "a job was charged twice"
    assert charges_after == len(charges), "a duplicate usage event was charged"
    assert job_ids <= set(records), "a job the client saw was never settled"
    assert all(records[job]["cost"] > 0 for job in completed), "a completed job was not charged"
    assert all(records[job]["cost"] == 0 for job in failed if job), "a failed job was charged"
    assert balance["available_micros"] == GRANT - sum(r["cost"] for r in records.values())
    assert balance["held_micros"] == 0
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
