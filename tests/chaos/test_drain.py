"""Scaling a pool down: SIGTERM lets a worker finish the jobs in hand while
another worker takes the new ones; nothing is lost or answered twice."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from pathlib import Path


from tests.chaos.test_settlement_chaos import config_file, load, wait_for_consumers
from tests.support.processes import background, free_port, gatewayz, wait_until_healthy
from tests.support.services import distributed_services


def test_sigterm_drains_in_flight_jobs(tmp_path: Path, upstream: str) -> None:
    with distributed_services(["fake"]) as services, contextlib.ExitStack() as stack:
        env = {**services.environ(), "GATEWAYZ_KEY_SECRET": "drain", "GATEWAYZ_DATA_DIR": str(tmp_path),
               "GATEWAYZ_CONFIG": str(config_file(tmp_path, upstream)), "GATEWAYZ_LOG_LEVEL": "info",
               "GATEWAYZ_DRAIN_TIMEOUT": "20"}
        assert gatewayz("migrate", env=env, cwd=tmp_path).returncode == 0
        key = gatewayz("keys", "create", "--name", "drain", "--credits", "1", env=env, cwd=tmp_path).stdout.split()[-1]
        port = free_port()
        ingress = stack.enter_context(background("ingress", "--port", str(port), env=env, cwd=tmp_path,
                                                 log=tmp_path / "ingress.log"))
        stack.enter_context(background("billing", env=env, cwd=tmp_path, log=tmp_path / "billing.log"))
        leaving = stack.enter_context(background("worker", "--provider", "fake", "--concurrency", "8", env=env,
                                                 cwd=tmp_path, log=tmp_path / "leaving.log"))
        wait_until_healthy(f"http://127.0.0.1:{port}", ingress, tmp_path / "ingress.log")
        asyncio.run(wait_for_consumers(services, "fake", 1))

        outcomes: list[tuple[str | None, str]] = []
        runner = threading.Thread(target=lambda: outcomes.extend(asyncio.run(load(f"http://127.0.0.1:{port}/v1", key))))
        runner.start()
        time.sleep(0.6)
        stack.enter_context(background("worker", "--provider", "fake", "--concurrency", "8", env=env, cwd=tmp_path,
                                       log=tmp_path / "staying.log"))
        leaving.send_signal(signal.SIGTERM)
        exit_code = leaving.wait(timeout=30)
        runner.join(timeout=120)
        log = (tmp_path / "leaving.log").read_text()

    assert exit_code == 0, log
    assert "draining" in log
    assert [outcome for _, outcome in outcomes] == ["complete"] * len(outcomes), "a job was lost or cut by the drain"
    assert len({job for job, _ in outcomes}) == len(outcomes)
