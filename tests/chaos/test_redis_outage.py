"""Chaos for Redis: the Redis behind the gateway's result bus, job marks,
circuit breakers, provider health and rate limits (a private one: the
shared Redis on 6379 never goes away) is stopped and started again while a
streaming load runs through separate ingress, worker and billing processes.
Streams in flight end with a clear error or complete; requests during the
outage fail at once with a clear error (no wait for their deadline);
requests after it succeed; and no charge is lost or doubled. A stream the
outage cut mid-way is charged for what its worker produced, as any cut
stream is. The figures are
printed for the record (``pytest -s``)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx

from tests.support.cluster import Cluster, running_cluster
from tests.support.processes import gatewayz
from tests.support.redis_server import own_redis

GRANT = 1_000_000  # micro-credits: the cluster's key has 1 credit
DEADLINE = 15  # seconds: GATEWAYZ_REQUEST_TIMEOUT
OUTAGE = 3.0  # seconds Redis stays down


def ask(cluster: Cluster, text: str) -> tuple[int, dict[str, object], float]:
    began = time.monotonic()
    response = httpx.post(f"{cluster.base_url}/chat/completions", timeout=DEADLINE + 10,
                          headers={"authorization": f"Bearer {cluster.key}"},
                          json={"model": "fake-small", "messages": [{"role": "user", "content": text}]})
    return response.status_code, response.json(), time.monotonic() - began


def test_redis_stops_and_restarts_under_load(tmp_path: Path, upstream: str) -> None:
    with own_redis() as redis_server, running_cluster(
            tmp_path, upstream, GATEWAYZ_REDIS_URL=redis_server.url, GATEWAYZ_LOG_LEVEL="warning",
            GATEWAYZ_REQUEST_TIMEOUT=str(DEADLINE), GATEWAYZ_STREAM_IDLE_TIMEOUT="5") as cluster:
        cluster.start("billing", "billing")
        cluster.worker("worker")
        cluster.wait_for_workers(1)

        before = [ask(cluster, f"before {n}") for n in range(10)]
        began = time.monotonic()
        runner = cluster.load(requests=60, concurrency=6)  # streams, 0.4 s each: about 4 s of load
        time.sleep(1.0)
        redis_server.stop()
        stopped = time.monotonic()
        during = []
        while time.monotonic() - stopped < OUTAGE:
            during.append(ask(cluster, "during the outage"))
        redis_server.start()
        restarted = time.monotonic()
        runner.join(timeout=DEADLINE + 30)
        assert not runner.is_alive(), "the load did not finish: some request hung"
        load_seconds = time.monotonic() - began

        # Every process reconnects by itself: the first answers come within seconds.
        recovered = None
        while recovered is None and time.monotonic() - restarted < 20:
            status, _, _ = ask(cluster, "probing recovery")
            recovered = time.monotonic() - restarted if status == 200 else None
        after = [ask(cluster, f"after {n}") for n in range(10)]

        open_holds = cluster.wait_until_settled(timeout=30)
        records = {row["job_id"]: row for row in cluster.query("SELECT * FROM usage_records")}
        charges = cluster.query("SELECT reference, count(*) AS n FROM ledger_transactions "
                                "WHERE kind = 'charge' GROUP BY reference")
        balance = httpx.get(f"{cluster.url}/user/balance", headers={"authorization": f"Bearer {cluster.key}"}).json()
        reconciled = gatewayz("billing", "reconcile", env=cluster.env, cwd=tmp_path)

    streamed = cluster.outcomes
    completed = [job for job, outcome in streamed if outcome == "complete"]
    failed = [job for job, outcome in streamed if outcome == "error"]
    charged = {job for job, record in records.items() if record["cost"] > 0}
    print(f"\nredis outage ({OUTAGE:g}s): before {Counter(s for s, _, _ in before)}; streams {len(streamed)}: "
          f"{len(completed)} completed, {len(failed)} ended with an error, over {load_seconds:.1f}s; "
          f"during {len(during)} requests {dict(Counter(s for s, _, _ in during))}, slowest "
          f"{max(t for _, _, t in during):.2f}s; recovered after {recovered}s; "
          f"after {Counter(s for s, _, _ in after)}; "
          f"{len(records)} settled, {len(charged)} charged, {sum(r['cost'] for r in records.values())} micro-credits, "
          f"{open_holds} holds open")

    assert all(status == 200 for status, _, _ in before)
    assert during, "no request was sent during the outage"
    for status, body, seconds in during:
        assert status in (502, 503, 504) and body["error"]["message"], (status, body)  # type: ignore[index]
        assert seconds < 6, f"a request waited {seconds:.1f}s on a Redis that is down"
    assert len(streamed) == 60 and completed, "no stream completed"
    assert recovered is not None, "the gateway did not recover once Redis was back"
    assert all(status == 200 for status, _, _ in after), after

    assert open_holds == 0, "holds left open"
    assert all(charge["n"] == 1 for charge in charges), "a job was charged twice"
    assert set(completed) <= charged, "a completed stream was not charged"
    # A stream cut by the outage is charged for what its worker produced (the
    # pool's rule for cut streams): only those in flight when Redis stopped.
    assert len(charged & set(failed)) <= 6, "streams that never ran were charged"
    assert all(job in records for job, _ in streamed if job), "a job the client saw was never settled"
    assert balance["available_micros"] == GRANT - sum(record["cost"] for record in records.values())
    assert balance["held_micros"] == 0
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
