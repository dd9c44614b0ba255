"""Circuit state is shared by every worker process (distributed mode, real
RabbitMQ, Redis and PostgreSQL): two worker processes of one provider each
see some of its failures, and together they open its circuit; then neither
calls it, the ingress (another process) shows it open, and an admin reset
made there reaches both."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path

import aio_pika
import httpx

from scheduler.topology import Topology
from tests.support.processes import background, free_port, gatewayz, wait_until_healthy
from tests.support.resilience import two_upstreams
from tests.support.services import Distributed, distributed_services

ADMIN_TOKEN = "shared-circuits-admin"


async def wait_for_consumers(services: Distributed, wanted: dict[str, int], timeout: float = 30) -> None:
    topology = Topology(services.namespace)
    async with await aio_pika.connect(services.broker_url) as connection:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = {}
            for provider in wanted:
                channel = await connection.channel()
                with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                    queue = await channel.declare_queue(topology.job_queue(provider), passive=True)
                    counts[provider] = queue.declaration_result.consumer_count
            if all(counts.get(provider, 0) >= count for provider, count in wanted.items()):
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"workers never attached: {wanted}")


def ask(url: str, key: str, message: str) -> str:
    response = httpx.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=30,
                          json={"model": "duo", "messages": [{"role": "user", "content": message}]})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == f"Echo: {message}"
    return response.headers["x-gatewayz-provider"]


def test_two_worker_processes_share_one_circuit(tmp_path: Path) -> None:
    with two_upstreams() as upstreams, distributed_services(["primary", "backup"]) as services, \
            contextlib.ExitStack() as stack:
        config = tmp_path / "gatewayz.toml"
        config.write_text(
            f'[providers.primary]\nbase_url = "{upstreams.primary_url}/v1"\n\n'
            f'[providers.backup]\nbase_url = "{upstreams.backup_url}/v1"\n\n'
            '[models.duo]\nproviders = ["primary", "backup"]\ninput_price_per_mtok = 1\noutput_price_per_mtok = 2\n'
        )
        env = {**services.environ(), "GATEWAYZ_KEY_SECRET": "shared", "GATEWAYZ_CONFIG": str(config),
               "GATEWAYZ_DATA_DIR": str(tmp_path), "GATEWAYZ_ADMIN_TOKEN": ADMIN_TOKEN, "GATEWAYZ_LOG_LEVEL": "info",
               "GATEWAYZ_BREAKER_FAILURES": "3", "GATEWAYZ_BREAKER_RESET_TIMEOUT": "600",
               "GATEWAYZ_UPSTREAM_RETRIES": "0"}
        assert gatewayz("migrate", env=env, cwd=tmp_path).returncode == 0
        key = gatewayz("keys", "create", "--name", "t", "--credits", "1", env=env, cwd=tmp_path).stdout.split()[-1]

        def start(name: str, *args: str) -> subprocess.Popen[bytes]:
            return stack.enter_context(background(*args, env=env, cwd=tmp_path, log=tmp_path / f"{name}.log"))

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        ingress = start("ingress", "ingress", "--port", str(port))
        for name, provider in (("primary-1", "primary"), ("primary-2", "primary"), ("backup", "backup")):
            start(name, "worker", "--provider", provider, "--concurrency", "4")
        start("billing", "billing")
        wait_until_healthy(url, ingress, tmp_path / "ingress.log")
        asyncio.run(wait_for_consumers(services, {"primary": 2, "backup": 1}))

        # Three failures in all, spread over both primary workers (RabbitMQ
        # hands them round): neither saw three, yet the circuit opens.
        assert [ask(url, key, f"fail:500@primary {n}") for n in range(3)] == ["backup"] * 3
        logs = [(tmp_path / f"primary-{n}.log").read_text() for n in (1, 2)]
        assert all("handed to backup" in log for log in logs), "each worker saw some of the failures"

        seen = len(upstreams.primary.requests)
        assert [ask(url, key, f"hello {n}") for n in range(6)] == ["backup"] * 6
        assert len(upstreams.primary.requests) == seen, "no worker process calls the provider any more"

        listed = httpx.get(f"{url}/health/providers").json()["data"]
        primary = next(entry for entry in listed if entry["provider"] == "primary")
        assert primary["status"] == "degraded"
        assert primary["models"] == [{"model": "duo", "circuit": primary["models"][0]["circuit"]}]
        assert (primary["models"][0]["circuit"]["state"], primary["models"][0]["circuit"]["failures"]) == ("open", 3)

        reset = httpx.post(f"{url}/admin/providers/primary/reset", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert reset.status_code == 200
        assert {ask(url, key, f"again {n}") for n in range(4)} == {"primary"}, "both workers see the reset"
