"""Jobs that expire with no worker to take them are settled by the
`gatewayz billing` process from their dead letters, which wait on the broker
for a billing process that is not running yet, and survive one SIGKILLed
while reading them: every job settles once, at zero, long before the
sweeper would release its hold."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx

from tests.support.cluster import running_cluster

REQUESTS = 20
DEADLINE = 2  # seconds: GATEWAYZ_REQUEST_TIMEOUT


async def _expiring(base_url: str, key: str) -> list[int]:
    body = {"model": "fake-small", "messages": [{"role": "user", "content": "nobody serves this"}]}
    async with httpx.AsyncClient(base_url=base_url, timeout=30, headers={"authorization": f"Bearer {key}"}) as client:
        answers = await asyncio.gather(*(client.post("/chat/completions", json=body) for _ in range(REQUESTS)))
    return [answer.status_code for answer in answers]


def test_expired_jobs_are_settled_once_by_billing_processes_that_come_and_go(tmp_path: Path, upstream: str) -> None:
    with running_cluster(tmp_path, upstream, GATEWAYZ_REQUEST_TIMEOUT=str(DEADLINE),
                         GATEWAYZ_LOG_LEVEL="info") as cluster:
        assert asyncio.run(_expiring(cluster.base_url, cluster.key)) == [504] * REQUESTS
        assert cluster.query("SELECT count(*) FROM holds WHERE NOT closed")[0][0] == REQUESTS, "no billing ran yet"

        first = cluster.start("billing-1", "billing")
        deadline = time.monotonic() + 30
        while not cluster.query("SELECT count(*) FROM usage_records")[0][0]:
            assert time.monotonic() < deadline, cluster.log("billing-1")
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)  # while reading them: what it had in hand is read again
        first.wait(timeout=10)
        cluster.start("billing-2", "billing")
        deadline = time.monotonic() + 45  # the sweeper would wait for the holds' expiry: deadline + 60 s
        while cluster.query("SELECT count(*) FROM holds WHERE NOT closed")[0][0]:
            assert time.monotonic() < deadline, cluster.log("billing-2")
            time.sleep(0.1)

        rows = cluster.query("SELECT job_id, cost, input_tokens, output_tokens FROM usage_records")
        released = cluster.query("SELECT count(*) FROM ledger_transactions WHERE kind = 'release'")[0][0]
        balance = httpx.get(f"{cluster.url}/user/balance", headers={"authorization": f"Bearer {cluster.key}"}).json()
        logs = cluster.log("billing-1") + cluster.log("billing-2")

    assert len(rows) == REQUESTS and len({row["job_id"] for row in rows}) == REQUESTS, "each job settled once"
    assert all((row["cost"], row["input_tokens"], row["output_tokens"]) == (0, 0, 0) for row in rows)
    assert released == 0, "settled by its dead letter, not released by the sweeper"
    assert (balance["available_micros"], balance["held_micros"]) == (1_000_000, 0)
    assert logs.count("was dead-lettered from") >= REQUESTS and "expired" in logs
