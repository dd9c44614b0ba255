"""Chaos for batches: workers, the billing consumer and the batch
orchestrator are SIGKILLed and restarted while a batch runs; and an
embedded gateway is SIGKILLed mid-batch and started again. Afterwards
every line appears exactly once in the output or error file, no job is
charged twice, no hold is left open, and the ledger reconciles. The counts
are printed for the record (``pytest -s``)."""

from __future__ import annotations

import io
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson

from tests.support.cluster import Cluster, running_cluster
from tests.support.processes import background, free_port, gatewayz, wait_until_healthy

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


def test_an_embedded_gateway_killed_mid_batch_finishes_it_when_it_starts_again(tmp_path: Path, upstream: str) -> None:
    """Embedded, the queue lives in the process: a SIGKILL loses the lines
    in it, and the restarted gateway releases again every line without a
    result (each once: those that settled before the kill are not run again)."""
    config = tmp_path / "gatewayz.toml"
    config.write_text(f'[providers.fake]\nadapter = "openai"\nbase_url = "{upstream}/v1"\nmodels = ["fake-small"]\n\n'
                      '[models."fake-small"]\nproviders = ["fake"]\ninput_price_per_mtok = 1.00\n'
                      'output_price_per_mtok = 2.00\n')
    env = {"GATEWAYZ_DATA_DIR": str(tmp_path / "data"), "GATEWAYZ_CONFIG": str(config), "GATEWAYZ_KEY_SECRET": "kill",
           "GATEWAYZ_BATCH_MAX_IN_FLIGHT": "6", "GATEWAYZ_LOG_LEVEL": "warning", "GATEWAYZ_BROKER_URL": "",
           "GATEWAYZ_REDIS_URL": "", "GATEWAYZ_DATABASE_URL": ""}
    key = gatewayz("keys", "create", "--name", "kill", "--credits", "1", env=env, cwd=tmp_path).stdout.split()[-1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sdk = openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=2, timeout=30)
    with background("serve", "--port", str(port), env=env, cwd=tmp_path, log=tmp_path / "serve-1.log") as first:
        wait_until_healthy(url, first, tmp_path / "serve-1.log")
        batch_id = submit(sdk)
        deadline = time.monotonic() + 60
        while (done := sdk.batches.retrieve(batch_id).request_counts).completed < LINES // 4:
            assert time.monotonic() < deadline, done
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
    with background("serve", "--port", str(port), env=env, cwd=tmp_path, log=tmp_path / "serve-2.log") as second:
        wait_until_healthy(url, second, tmp_path / "serve-2.log")
        deadline = time.monotonic() + 120
        while (batch := sdk.batches.retrieve(batch_id)).status != "completed":
            assert time.monotonic() < deadline, batch.request_counts
            time.sleep(0.1)
        output, errors = lines_of(sdk, batch.output_file_id), lines_of(sdk, batch.error_file_id)
        balance = httpx.get(f"{url}/user/balance", headers={"authorization": f"Bearer {key}"}).json()
        usage = httpx.get(f"{url}/user/usage", params={"batch_id": batch_id, "limit": 1000},
                          headers={"authorization": f"Bearer {key}"}).json()
    reconciled = gatewayz("billing", "reconcile", env=env, cwd=tmp_path)

    answered = sorted(item["custom_id"] for item in output + errors)
    print(f"\nembedded kill: {LINES} lines, {len(output)} answered, {len(errors)} errors, "
          f"{len(usage['data'])} charged")
    assert answered == sorted(f"line-{index}" for index in range(LINES)), "a line is missing or twice"
    assert not errors and len(usage["data"]) == LINES, "every line settled once"
    assert balance["held_micros"] == 0
    assert balance["available_micros"] == 1_000_000 - usage["totals"]["cost_micros"]
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
