"""Chaos for money: workers and the billing consumer are SIGKILLed and
restarted under a steady streaming load, and usage events are delivered
twice. Afterwards every job is settled exactly once, completed jobs are
charged, interrupted jobs are not, no hold is left open, and the ledger
reconciles. The counts are printed for the record (``pytest -s``)."""

from __future__ import annotations

import asyncio
import signal
import time
from decimal import Decimal
from pathlib import Path

import aio_pika
import httpx

from scheduler.topology import Topology
from schema.jobs import Price, Usage, UsageEvent
from tests.support.cluster import running_cluster
from tests.support.processes import gatewayz
from tests.support.services import Distributed

REQUESTS, CONCURRENCY = 80, 12
GRANT = 1_000_000  # micro-credits: the cluster's key has 1 credit


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
    with running_cluster(tmp_path, upstream, GATEWAYZ_LOG_LEVEL="warning") as cluster:
        billing = cluster.start("billing-1", "billing")
        first, second = cluster.worker("worker-1"), cluster.worker("worker-2")
        cluster.wait_for_workers(2)

        runner = cluster.load(REQUESTS, CONCURRENCY)
        time.sleep(0.8)
        first.send_signal(signal.SIGKILL)  # mid-stream: its jobs are redelivered to worker-2
        cluster.worker("worker-3")
        time.sleep(0.8)
        billing.send_signal(signal.SIGKILL)  # mid-batch: unacked usage events are redelivered
        time.sleep(0.5)
        cluster.start("billing-2", "billing")
        time.sleep(0.8)
        second.send_signal(signal.SIGKILL)
        runner.join(timeout=120)
        assert not runner.is_alive(), "the load did not finish: some request hung"
        outcomes = cluster.outcomes

        # Everything settles: every job gets exactly one usage record.
        open_holds = cluster.wait_until_settled(timeout=60)
        assert open_holds == 0, "holds left open"

        records = {row["job_id"]: row for row in cluster.query("SELECT * FROM usage_records")}
        charges = cluster.query("SELECT reference, count(*) AS n FROM ledger_transactions WHERE kind = 'charge' "
                                "GROUP BY reference")
        # Deliver every usage event a second time, as a broker may.
        duplicates = [UsageEvent(job_id=row["job_id"], account_id=row["account_id"], key_id=row["key_id"],
                                 provider=row["provider"], model=row["model"],
                                 usage=Usage(input_tokens=row["input_tokens"], output_tokens=row["output_tokens"]),
                                 price=Price(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2)))
                      for row in records.values()]
        asyncio.run(redeliver(cluster.services, duplicates))
        time.sleep(2.0)
        charges_after = cluster.query("SELECT count(*) AS n FROM ledger_transactions WHERE kind = 'charge'")[0]["n"]
        balance = httpx.get(f"{cluster.url}/user/balance", headers={"authorization": f"Bearer {cluster.key}"}).json()
        reconciled = gatewayz("billing", "reconcile", env=cluster.env, cwd=tmp_path)

    job_ids = {job for job, _ in outcomes if job}
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
