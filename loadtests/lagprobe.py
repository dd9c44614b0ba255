"""Event-loop lag of a gateway process, measured from inside it without
touching the gateway's code.

``launcher(directory)`` gives the benchmark's targets a command that runs
``gatewayz <argv>`` (any role) with a probe in every event loop the process
runs: every ``INTERVAL`` a timer callback notes how late it ran. A callback
that is late waited behind other work, so lateness is what any request or
stream chunk waiting in that loop would have waited too. The probe hooks
``asyncio.Runner`` (which ``uvicorn`` and ``uvloop.run`` both use), so a
forked ingress process (``gatewayz ingress --workers N``) probes its own
loop.

Each process appends ``<monotonic time> <lag seconds>`` lines to
``directory/<pid>.lag`` once a second; ``lags(directory, start, end)``
reads the samples of every process within a window of ``time.monotonic()``
(one clock for every process on the machine). The probe costs its process
about a hundred timer callbacks a second.
"""

from __future__ import annotations

import asyncio
import os
import runpy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

INTERVAL = 0.01  # seconds between samples
FLUSH_EVERY = 1.0  # seconds between writes


def launcher(directory: Path) -> Callable[[str, list[str]], list[str]]:
    """``launch(role, argv)``: the command running ``gatewayz argv`` under the probe."""
    # Imported here: the probed process imports this module too, and should
    # carry the standard library only.
    from loadtests.targets import gatewayz_command

    def launch(role: str, argv: list[str]) -> list[str]:
        script = gatewayz_command()[0]
        root = str(Path(__file__).resolve().parent.parent)
        code = (f"import sys; sys.path.insert(0, {root!r}); from loadtests.lagprobe import run; "
                f"run({str(directory)!r}, {script!r}, {argv!r})")
        return [sys.executable, "-c", code]
    return launch


def run(directory: str, script: str, argv: list[str]) -> None:
    """Run the ``gatewayz`` script with ``argv``, every event loop probed."""
    install(Path(directory))
    sys.path[0] = str(Path(script).parent)  # as if the script ran: its own directory first
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")


def install(directory: Path) -> None:
    original = asyncio.Runner.__init__

    def probed_runner(self: asyncio.Runner, *, debug: bool | None = None,
                      loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> None:
        make = loop_factory or asyncio.new_event_loop

        def probed_loop() -> asyncio.AbstractEventLoop:
            loop = make()
            loop.call_soon(_Probe(loop, directory).tick)
            return loop

        original(self, debug=debug, loop_factory=probed_loop)

    asyncio.Runner.__init__ = probed_runner  # type: ignore[method-assign]


class _Probe:
    def __init__(self, loop: asyncio.AbstractEventLoop, directory: Path) -> None:
        self._loop = loop
        self._directory = directory
        self._output: TextIO | None = None
        self._pending: list[str] = []
        self._due = 0.0
        self._flushed = time.monotonic()

    def tick(self) -> None:
        # The clock, not loop.time(): uvloop's is libuv's, cached per loop iteration.
        now = time.monotonic()
        if self._due:
            self._pending.append(f"{now:.4f} {max(now - self._due, 0.0):.5f}\n")
            if now - self._flushed >= FLUSH_EVERY:
                self._flush(now)
        self._due = now + INTERVAL
        self._loop.call_later(INTERVAL, self.tick)

    def _flush(self, now: float) -> None:
        self._flushed = now
        if self._output is None:  # opened here, so a forked process writes a file of its own
            self._output = (self._directory / f"{os.getpid()}.lag").open("a")
        self._output.write("".join(self._pending))
        self._output.flush()
        self._pending.clear()


def lags(directory: Path, start: float, end: float) -> dict[int, list[float]]:
    """Every process's lag samples (seconds) taken from ``start`` to ``end``, by pid."""
    found: dict[int, list[float]] = {}
    for path in directory.glob("*.lag"):
        samples = []
        for line in path.read_text().splitlines():
            stamp, _, lag = line.partition(" ")
            try:
                if start <= float(stamp) <= end:
                    samples.append(float(lag))
            except ValueError:
                continue  # a line still being written
        if samples:
            found[int(path.stem)] = samples
    return found


def summary(samples: list[float]) -> dict[str, Any]:
    """p50, p99 and max lag in milliseconds, and how many samples."""
    from loadtests.load import percentile  # see launcher

    return {"samples": len(samples),
            "p50_ms": _ms(percentile(samples, 0.50)), "p99_ms": _ms(percentile(samples, 0.99)),
            "max_ms": _ms(max(samples) if samples else None)}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)
