"""The prober role as real processes: two ``gatewayz prober`` on one
namespace still probe once per interval (a round claims its interval), and
when one is SIGKILLed the other carries on; ``/health/providers`` on the
ingress shows the probes; a prober killed in the middle of a round leaves
its chain to the other."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psutil
from starlette.requests import Request
from starlette.responses import Response

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


class HeldListings(FakeUpstream):
    """A fake provider whose model list, once ``hold`` is set, answers only
    when ``release`` is set; it keeps the client port of each held listing."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = threading.Event()
        self.release = threading.Event()
        self.held_ports: list[int] = []

    async def models(self, request: Request) -> Response:
        if self.hold.is_set() and request.client is not None:
            self.held_ports.append(request.client.port)
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        return await super().models(request)


def holder_of(port: int, processes: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    for process in processes:
        if any(connection.laddr and connection.laddr.port == port
               for connection in psutil.Process(process.pid).net_connections(kind="tcp")):
            return process
    raise AssertionError(f"no prober holds the connection from port {port}")


def test_a_prober_killed_in_the_middle_of_a_round_leaves_its_chain_to_the_other(tmp_path: Path) -> None:
    """The round's message goes back to RabbitMQ and on to the survivor,
    while the dead prober's claim on the interval still holds: the survivor
    must carry that chain on, not end it as another chain's."""
    fake = HeldListings()
    with ServerThread(fake.app, name="probed upstream") as server, running_cluster(
            tmp_path, server.url, GATEWAYZ_PROBE_INTERVAL=str(INTERVAL), GATEWAYZ_LOG_LEVEL="info") as cluster:
        probers = [cluster.start("prober-1", "prober"), cluster.start("prober-2", "prober")]
        deadline = time.monotonic() + 30
        while fake.listings < 2:
            assert time.monotonic() < deadline, cluster.log("prober-1") + cluster.log("prober-2")
            time.sleep(0.05)
        fake.hold.set()
        while not fake.held_ports:
            assert time.monotonic() < deadline, "no round began"
            time.sleep(0.005)
        probing = holder_of(fake.held_ports[0], probers)
        probing.send_signal(signal.SIGKILL)
        probing.wait(timeout=10)
        fake.hold.clear()
        fake.release.set()
        alone, alone_seconds = rounds_in(fake, 3.0)

    print(f"\nprober: {alone} rounds in {alone_seconds:.1f}s after the probing prober was killed mid-round")
    assert 2 <= alone <= alone_seconds / INTERVAL + 1, "probing stopped or doubled after a prober died mid-round"
