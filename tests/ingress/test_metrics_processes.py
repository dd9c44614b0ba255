"""Metrics of the roles run as real processes: ``gatewayz ingress --workers 2``
gives the whole ingress's totals whichever process a scrape reaches, and a
worker and a billing process serve their own ``/metrics`` on
``--metrics-port`` / ``GATEWAYZ_METRICS_PORT``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.ingress.test_cli import HELLO, distributed_key
from tests.support.processes import background, free_port, wait_for_line, wait_until_healthy
from tests.support.services import distributed_services

REQUESTS = 12


def totals(url: str) -> dict[str, float]:
    """Each sample's value summed over its labels, by sample name, from one
    scrape on a connection of its own (the kernel picks the process)."""
    with httpx.Client(timeout=10) as client:
        response = client.get(f"{url}/metrics")
    assert response.status_code == 200
    summed: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            summed[sample.name] = summed.get(sample.name, 0.0) + sample.value
    return summed


def eventually(url: str, check: Callable[[dict[str, float]], bool], timeout: float = 15) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while not check(found := totals(url)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def test_every_role_process_serves_its_metrics_and_ingress_processes_add_up(tmp_path: Path) -> None:
    with distributed_services(["mock"]) as services:
        env, key = distributed_key(services, tmp_path, "metrics")
        port, worker_port, billing_port = free_port(), free_port(), free_port()
        with (
            background("ingress", "--port", str(port), "--workers", "2", env=env, cwd=tmp_path,
                       log=tmp_path / "ingress.log") as ingress,
            background("worker", "--provider", "mock", "--concurrency", "4", "--metrics-port", str(worker_port),
                       env=env, cwd=tmp_path, log=tmp_path / "worker.log") as worker,
            background("billing", env={**env, "GATEWAYZ_METRICS_PORT": str(billing_port)}, cwd=tmp_path,
                       log=tmp_path / "billing.log"),
        ):
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(url, ingress, tmp_path / "ingress.log")
            wait_for_line(tmp_path / "worker.log", "pool mock serving", worker)
            for _ in range(REQUESTS):
                # A connection each: the kernel spreads them over both ingress processes.
                with openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0) as client:
                    reply = client.chat.completions.create(model="mock/echo", messages=HELLO)
                    assert reply.choices[0].message.content == "You said: hello gateway"

            # Whichever process answers the scrape, it counts every request.
            for _ in range(8):
                assert totals(url)["gatewayz_requests_total"] == REQUESTS
            scraped = totals(url)
            assert scraped["gatewayz_request_duration_seconds_count"] == REQUESTS
            assert scraped["gatewayz_pool_consumers"] == 1  # read at scrape time from the shared pool statistics

            # A process that dies takes none of the counts it made with it.
            psutil.Process(ingress.pid).children()[0].kill()
            for _ in range(8):
                assert totals(url)["gatewayz_requests_total"] == REQUESTS

            worker_metrics = totals(f"http://127.0.0.1:{worker_port}")
            assert worker_metrics["gatewayz_queue_wait_seconds_count"] == REQUESTS
            assert "gatewayz_requests_total" not in worker_metrics  # the ingress's, not the worker's

            # 2 prompt words and 4 reply words each, settled by the billing process.
            billing = eventually(f"http://127.0.0.1:{billing_port}",
                                 lambda found: found.get("gatewayz_tokens_total", 0) >= REQUESTS * 6)
            assert billing["gatewayz_tokens_total"] == REQUESTS * 6
            assert billing["gatewayz_settlement_lag_seconds_count"] == REQUESTS
            assert billing["gatewayz_billing_batch_size_sum"] == REQUESTS
