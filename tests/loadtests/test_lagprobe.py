"""The event-loop lag probe (``loadtests.lagprobe``) sees a loop that was
kept busy, in a process of its own as the benchmarks run it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from loadtests.lagprobe import lags, summary

ROOT = Path(__file__).resolve().parents[2]

BUSY_LOOP = """
import asyncio, sys, time
sys.path.insert(0, {root!r})
from loadtests.lagprobe import install
install(__import__("pathlib").Path({directory!r}))

async def main():
    await asyncio.sleep(0.5)
    time.sleep(0.4)  # the loop is held: the probe's next tick is late by about this much
    await asyncio.sleep(1.5)  # the probe writes what it saw once a second

asyncio.run(main())
"""


def test_the_probe_sees_a_held_loop(tmp_path: Path) -> None:
    start = time.monotonic()
    code = BUSY_LOOP.format(root=str(ROOT), directory=str(tmp_path))
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    found = lags(tmp_path, start, time.monotonic())
    assert len(found) == 1  # one file, by the process's id
    samples = next(iter(found.values()))
    assert len(samples) >= 20
    figures = summary(samples)
    assert figures["max_ms"] >= 300
    assert figures["p50_ms"] < figures["max_ms"]
