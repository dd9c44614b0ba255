"""Scaling a pool down: SIGTERM lets a worker finish the jobs in hand while
another worker takes the new ones; nothing is lost or answered twice."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.support.cluster import running_cluster


def test_sigterm_drains_in_flight_jobs(tmp_path: Path, upstream: str) -> None:
    with running_cluster(tmp_path, upstream, GATEWAYZ_LOG_LEVEL="info", GATEWAYZ_DRAIN_TIMEOUT="20") as cluster:
        cluster.start("billing", "billing")
        leaving = cluster.worker("leaving")
        cluster.wait_for_workers(1)
        runner = cluster.load(requests=80, concurrency=12)
        cluster.wait_for_jobs_in_hand(leaving)  # SIGTERM while it holds some: they must finish
        cluster.worker("staying")
        leaving.send_signal(signal.SIGTERM)
        exit_code = leaving.wait(timeout=30)
        runner.join(timeout=120)
        log = cluster.log("leaving")

    assert exit_code == 0, log
    assert "draining" in log
    outcomes = cluster.outcomes
    assert [outcome for _, outcome in outcomes] == ["complete"] * 80, "a job was lost or cut by the drain"
    assert len({job for job, _ in outcomes}) == 80
