"""Chaos for batches: workers, the billing consumer and the batch
orchestrator are SIGKILLed and restarted while a batch runs. Afterwards
every line appears exactly once in the output or error file, no job is
charged twice, no hold is left open, and the ledger reconciles. The counts
are printed for the record (``pytest -s``)."""

from __future__ import annotations

import io
import signal
import time
from pathlib import Path
from typing import Any

import openai
import orjson

from tests.support.cluster import Cluster, running_cluster
from tests.support.processes import gatewayz

LINES = 240
PROMPT = "pace:3:0:60 batch line"  # a few words over ~120 ms: kills land on lines in flight


def submit(sdk: openai.OpenAI) -> str:
    content = b"".join(orjson.dumps({
        "custom_id": f"line-{index}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "fake-small", "max_tokens": 10, "messages": [{"role": "user", "content": PROMPT}]},
    }) + b"\n" for index in range(LINES))
    uploaded = sdk.files.create(file=("chaos.jsonl", io.BytesIO(content)), purpose="batch")
    return sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                              completion_window="24h").id


def wait_until(cluster: Cluster, sdk: openai.OpenAI, batch_id: str, done: int, timeout: float) -> Any:
    """Until ``done`` lines have a result (all of them: until the batch ended)."""
    deadline = time.monotonic() + timeout
    while True:
        batch = sdk.batches.retrieve(batch_id)
        counts = batch.request_counts
        if batch.status in ("completed", "failed") or done < LINES and counts.completed + counts.failed >= done:
            return batch
        assert time.monotonic() < deadline, f"batch {batch.status} at {counts}; orchestrator log:\n" + "\n".join(
            cluster.log(name)[-2000:] for name in ("orchestrator-1", "orchestrator-2"))
        time.sleep(0.1)


def lines_of(sdk: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [orjson.loads(raw) for raw in sdk.files.content(file_id).content.splitlines()]


def test_kill_workers_billing_and_the_orchestrator_mid_batch(tmp_path: Path, upstream: str) -> None:
    with running_cluster(tmp_path, upstream, GATEWAYZ_LOG_LEVEL="warning",
                         GATEWAYZ_BATCH_MAX_IN_FLIGHT="24") as cluster:
        sdk = openai.OpenAI(api_key=cluster.key, base_url=cluster.base_url, max_retries=2, timeout=30)
        billing = cluster.start("billing-1", "billing")
        orchestrator = cluster.start("orchestrator-1", "orchestrator")
        first, second = cluster.worker("worker-1"), cluster.worker("worker-2")
        cluster.wait_for_workers(2)

        batch_id = submit(sdk)
        wait_until(cluster, sdk, batch_id, LINES // 6, timeout=60)
        first.send_signal(signal.SIGKILL)  # lines in hand are redelivered, and run again
        cluster.worker("worker-3")
        wait_until(cluster, sdk, batch_id, LINES // 3, timeout=60)
        orchestrator.send_signal(signal.SIGKILL)  # mid-step, perhaps: its step is redelivered
        billing.send_signal(signal.SIGKILL)  # mid-settlement: its usage events are redelivered
        time.sleep(0.5)
        cluster.start("billing-2", "billing")
        cluster.start("orchestrator-2", "orchestrator")
        wait_until(cluster, sdk, batch_id, LINES // 2, timeout=90)
        second.send_signal(signal.SIGKILL)
        batch = wait_until(cluster, sdk, batch_id, LINES, timeout=120)
        output, errors = lines_of(sdk, batch.output_file_id), lines_of(sdk, batch.error_file_id)

        open_holds = cluster.wait_until_settled(timeout=60)
        usage = cluster.query(f"SELECT job_id, cost FROM usage_records WHERE batch_id = '{batch_id}'")
        charges = cluster.query("SELECT reference, count(*) AS n FROM ledger_transactions WHERE kind = 'charge' "
                                f"AND reference LIKE 'job_{batch_id}_%' GROUP BY reference")
        reconciled = gatewayz("billing", "reconcile", env=cluster.env, cwd=tmp_path)
        reruns = sum(cluster.log(name).count("running it again") for name in ("worker-2", "worker-3"))

    answered = [item["custom_id"] for item in output] + [item["custom_id"] for item in errors]
    print(f"\nbatch chaos: {LINES} lines, {len(output)} answered, {len(errors)} errors, {len(usage)} settled, "
          f"{sum(1 for row in usage if row['cost'] > 0)} charged, {reruns} interrupted and run again")
    assert batch.status == "completed"
    assert reruns > 0, "the kills should interrupt lines in flight"
    assert sorted(answered) == sorted(f"line-{index}" for index in range(LINES)), "a line is missing or twice"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (len(output), len(errors))
    assert all(row["n"] == 1 for row in charges), "a line was charged twice"
    assert {item["response"]["request_id"] for item in output} <= {row["job_id"] for row in usage}
    assert open_holds == 0, "holds left open"
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
