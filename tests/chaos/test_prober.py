"""The prober role as real processes: two ``gatewayz prober`` on one
namespace still probe once per interval (a round claims its interval), and
when one is SIGKILLed the other carries on; ``/health/providers`` on the
ingress shows the probes."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from loadtests.fake_upstream import FakeUpstream
from tests.support.cluster import running_cluster
from tests.support.servers import ServerThread

INTERVAL = 0.5


def rounds_in(fake: FakeUpstream, seconds: float) -> tuple[int, float]:
    listed, began = fake.listings, time.monotonic()
    time.sleep(seconds)
    return fake.listings - listed, time.monotonic() - began


def test_two_probers_probe_once_per_interval_and_survive_a_kill(tmp_path: Path) -> None:
    fake = FakeUpstream()
    with ServerThread(fake.app, name="probed upstream") as server, running_cluster(
            tmp_path, server.url, GATEWAYZ_PROBE_INTERVAL=str(INTERVAL), GATEWAYZ_LOG_LEVEL="info") as cluster:
        first = cluster.start("prober-1", "prober")
        cluster.start("prober-2", "prober")
        deadline = time.monotonic() + 30
        while fake.listings < 2:
            assert time.monotonic() < deadline, cluster.log("prober-1") + cluster.log("prober-2")
            time.sleep(0.1)
        both, both_seconds = rounds_in(fake, 3.0)
        first.send_signal(signal.SIGKILL)
        time.sleep(1.0)  # RabbitMQ hands the killed worker's message to the other
        alone, alone_seconds = rounds_in(fake, 3.0)
        probe = next(entry for entry in httpx.get(f"{cluster.url}/health/providers").json()["data"]
                     if entry["provider"] == "fake")["probe"]

    print(f"\nprober: {both} rounds in {both_seconds:.1f}s with two probers, {alone} in {alone_seconds:.1f}s "
          f"after one was killed (interval {INTERVAL}s)")
    assert 2 <= both <= both_seconds / INTERVAL + 1, "two probers probed more than once per interval"
    assert 2 <= alone <= alone_seconds / INTERVAL + 1, "probing stopped or doubled after a prober was killed"
    assert probe["count"] >= 4 and probe["success_rate"] == 1.0 and probe["last_ok"] is True
