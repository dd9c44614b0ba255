"""The priority benchmark: does a realtime request keep a short queue wait
while standard and bulk traffic saturate its pool?

    python -m loadtests.priority [--worker-concurrency 4] [--duration 15] [--load-users 24]
                                 [--batch-lines [10000]] [--reserved-slots N] [--realtime-slots N]

It starts the distributed gateway (``ingress``, one ``worker`` of limited
concurrency, ``billing``) in front of the fake upstream, with one key per
priority class (plans ``realtime``, ``standard``, ``bulk``), and streams
``slow …`` replies (a few words 50 ms apart, so each job holds a worker
slot for a while). Two phases, each ``--duration`` seconds:

1. **alone**: each class by itself, a few users (``--probe-users``), one
   class after another;
2. **saturated**: ``--load-users`` standard and as many bulk users keep the
   pool's queue full, while the same few realtime, standard and bulk users
   as in phase 1 measure what a request of each class waits;
3. with ``--batch-lines N`` (10,000 if no N is given), **saturated + batch**:
   phase 2 again while a batch of N chat lines runs, submitted through the
   API (``/v1/files``, ``/v1/batches``, with ``gatewayz orchestrator``
   running) and polled; its lines done per second during the phase are
   reported, and it is cancelled after the phase.

The worker's reserve is the product's default for its concurrency unless
``--reserved-slots`` (kept from bulk and batch work) or ``--realtime-slots``
(of those, kept from standard work too) say otherwise; the table's heading
gives the reserve it ran with.

Every user is a closed loop (one request at a time). The figure is the
gateway's own ``x-gatewayz-queue-ms`` of each answered request: the time
from enqueue to a worker taking the job. Requests refused by admission
control (503) are counted, not timed. It prints a markdown table and writes
the figures as JSON to ``loadtests/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from collections.abc import Coroutine
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop

from loadtests import targets
from loadtests.load import Target, percentile
from scheduler.queues.slots import Reserve

RESULTS = Path(__file__).parent / "results"
PROMPT = "slow one two three four"  # five words streamed 50 ms apart: each job holds its slot ~0.25 s
BATCH_PROMPT = "pace:5:50:50"  # a JSON answer after five words' time: each line holds its slot ~0.25 s too
BATCH_POLL = 0.5  # seconds between reads of the batch's progress
CLASSES = targets.PRIORITY_CLASSES


@dataclass
class ClassResult:
    phase: str  # alone | saturated
    group: str  # the class, or "<class> (load)" for the saturating users
    users: int
    ok: int = 0
    refused: int = 0  # 503 from admission control
    errors: dict[str, int] = field(default_factory=dict)
    queue_ms: list[int] = field(default_factory=list)

    @property
    def p50(self) -> float | None:
        return percentile(self.queue_ms, 0.50)

    @property
    def p99(self) -> float | None:
        return percentile(self.queue_ms, 0.99)


@dataclass
class BatchProgress:
    """The batch run during the ``saturated + batch`` phase."""

    lines: int
    batch_id: str = ""
    done_before: int = 0  # lines completed or failed when the phase began
    done_after: int = 0  # … and when it ended
    seconds: float = 0.0
    status: str = ""

    @property
    def rate(self) -> float:
        return (self.done_after - self.done_before) / self.seconds if self.seconds else 0.0


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Queue wait per priority class, alone and under saturation.")
    parser.add_argument("--worker-concurrency", type=int, default=4, help="the worker's --concurrency (default 4)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measurement (default 15)")
    parser.add_argument("--probe-users", type=int, default=2, help="users measuring each class (default 2)")
    parser.add_argument("--load-users", type=int, default=24,
                        help="standard users, and as many bulk users, saturating the pool (default 24)")
    parser.add_argument("--standard-load-users", type=int, default=None,
                        help="standard users of the saturating load, if not as many as --load-users (0: the "
                             "load is bulk alone, with the batch the issue's target is stated for)")
    parser.add_argument("--batch-lines", type=int, nargs="?", const=10_000, default=0,
                        help="run the saturated phase again beside a batch of this many lines (10,000 if no "
                             "number follows; default: no batch)")
    parser.add_argument("--reserved-slots", type=int, default=None,
                        help="the worker's GATEWAYZ_RESERVED_SLOTS (default: the product's, a quarter of the pool)")
    parser.add_argument("--realtime-slots", type=int, default=None,
                        help="the worker's GATEWAYZ_REALTIME_SLOTS (default: the product's, none)")
    parser.add_argument("--broker-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default loadtests/results/priority-<time>.json)")
    arguments = parser.parse_args(argv)
    if min(arguments.worker_concurrency, arguments.probe_users, arguments.load_users) < 1 or arguments.duration <= 0:
        parser.error("counts and --duration must be positive")
    if not 0 <= arguments.batch_lines <= 50_000:
        parser.error("--batch-lines is 0 to 50,000 (OpenAI's limit of lines in a batch)")
    return arguments


async def _user(target: Target, result: ClassResult, until: float) -> None:
    body = orjson.dumps({"model": target.model, "stream": True, "messages": [{"role": "user", "content": PROMPT}]})
    async with target.client() as client:
        while time.monotonic() < until:
            try:
                async with client.stream("POST", "/v1/chat/completions", content=body) as response:
                    await response.aread()
                    if response.status_code == 503:
                        result.refused += 1
                        await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                        continue
                    if response.status_code != 200 or not response.text.rstrip().endswith("data: [DONE]"):
                        key = f"http {response.status_code}"
                        result.errors[key] = result.errors.get(key, 0) + 1
                        continue
                    result.ok += 1
                    result.queue_ms.append(int(response.headers["x-gatewayz-queue-ms"]))
            except httpx.HTTPError as error:
                result.errors[type(error).__name__] = result.errors.get(type(error).__name__, 0) + 1


async def _phase(name: str, users: dict[str, list[Target]], duration: float,
                 measured: set[str]) -> list[ClassResult]:
    """Run every class's users for ``duration`` seconds; the results of the ``measured`` groups."""
    until = time.monotonic() + duration
    results = {group: ClassResult(name, group.replace(":load", " (load)"), len(group_users))
               for group, group_users in users.items()}
    await asyncio.gather(*(_user(target, results[group], until)
                           for group, group_users in users.items() for target in group_users))
    return [results[group] for group in users if group in measured]


def _batch_file(lines: int) -> bytes:
    return b"".join(orjson.dumps({
        "custom_id": f"line-{number}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": targets.MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": BATCH_PROMPT}]},
    }) + b"\n" for number in range(lines))


async def _batch_done(client: httpx.AsyncClient, batch_id: str) -> tuple[int, str]:
    """Lines of the batch ended (completed or failed), and its status."""
    response = await client.get(f"/v1/batches/{batch_id}")
    response.raise_for_status()
    batch = response.json()
    counts = batch.get("request_counts") or {}
    return counts.get("completed", 0) + counts.get("failed", 0), batch["status"]


async def _start_batch(client: httpx.AsyncClient, progress: BatchProgress) -> None:
    """Upload the batch's file and create it; return once its lines run."""
    uploaded = await client.post("/v1/files", data={"purpose": "batch"},
                                 files={"file": ("priority-batch.jsonl", _batch_file(progress.lines))})
    uploaded.raise_for_status()
    created = await client.post("/v1/batches", json={"input_file_id": uploaded.json()["id"],
                                                     "endpoint": "/v1/chat/completions", "completion_window": "24h"})
    created.raise_for_status()
    progress.batch_id = created.json()["id"]
    deadline = time.monotonic() + 120
    while True:
        done, progress.status = await _batch_done(client, progress.batch_id)
        if done > 0 or progress.status not in ("validating", "in_progress"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"batch {progress.batch_id} ran no line in 120 s (status {progress.status})")
        await asyncio.sleep(BATCH_POLL)
    if progress.status != "in_progress":
        raise RuntimeError(f"batch {progress.batch_id} is {progress.status}, not running")


async def _with_batch(key: str, origin: str, progress: BatchProgress,
                      phase: Coroutine[Any, Any, list[ClassResult]]) -> list[ClassResult]:
    """Run ``phase`` while the batch runs, counting the batch's lines done meanwhile."""
    async with httpx.AsyncClient(base_url=origin, headers={"authorization": f"Bearer {key}"}, timeout=60) as client:
        await _start_batch(client, progress)
        progress.done_before, _ = await _batch_done(client, progress.batch_id)
        started = time.monotonic()
        results = await phase
        progress.seconds = time.monotonic() - started
        progress.done_after, progress.status = await _batch_done(client, progress.batch_id)
        if progress.status == "in_progress":  # the rest of it would only slow the next run
            (await client.post(f"/v1/batches/{progress.batch_id}/cancel")).raise_for_status()
    return results


async def _measure(keys: dict[str, str], origin: str, arguments: argparse.Namespace,
                   batch: BatchProgress | None = None) -> list[ClassResult]:
    def targets_of(priority: str, count: int) -> list[Target]:
        return [Target(priority, origin, targets.MODEL, keys[priority]) for _ in range(count)]

    probes = {priority: targets_of(priority, arguments.probe_users) for priority in CLASSES}
    results: list[ClassResult] = []
    # Warm up: one request of each class, so connections and queues exist.
    await _phase("warm-up", {priority: targets_of(priority, 1) for priority in CLASSES}, 2.0, set())
    for priority in CLASSES:
        print(f"alone: {priority}", flush=True)
        results += await _phase("alone", {priority: probes[priority]}, arguments.duration, {priority})
    standard_users = _standard_users(arguments)
    print(f"saturated: {standard_users} standard and {arguments.load_users} bulk users, with every class probed",
          flush=True)
    load = {"standard:load": targets_of("standard", standard_users),
            "bulk:load": targets_of("bulk", arguments.load_users)}
    if not standard_users:
        del load["standard:load"]
    measured = {*CLASSES, *load}
    results += await _phase("saturated", {**load, **probes}, arguments.duration, measured)
    if batch is not None:
        print(f"saturated + batch: the same, beside a batch of {batch.lines} lines", flush=True)
        results += await _with_batch(keys["standard"], origin, batch,
                                     _phase("saturated + batch", {**load, **probes}, arguments.duration, measured))
    return results


def _standard_users(arguments: argparse.Namespace) -> int:
    users = arguments.load_users if arguments.standard_load_users is None else arguments.standard_load_users
    return int(users)


def _reserve(arguments: argparse.Namespace) -> Reserve:
    return Reserve.of_pool(arguments.worker_concurrency, arguments.reserved_slots, arguments.realtime_slots)


def _figure(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def markdown(results: list[ClassResult], arguments: argparse.Namespace, batch: BatchProgress | None = None) -> str:
    reserve = _reserve(arguments)
    lines = [f"Queue wait (x-gatewayz-queue-ms) per class; one worker, --concurrency {arguments.worker_concurrency}, "
             f"{reserve.interactive} slots kept from bulk and batch work, {reserve.realtime} of them for realtime "
             f"work alone; {arguments.duration:g} s per phase; saturating load: "
             f"{_standard_users(arguments)} standard + {arguments.load_users} bulk users (closed loop).", "",
             "| phase | class | users | answered | refused (503) | errors | p50 ms | p99 ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for result in results:
        lines.append(f"| {result.phase} | {result.group} | {result.users} | {result.ok} | {result.refused} | "
                     f"{sum(result.errors.values())} | {_figure(result.p50)} | {_figure(result.p99)} |")
    if batch is not None:
        lines += ["", f"Batch of {batch.lines} lines ({batch.batch_id}): {batch.done_after - batch.done_before} "
                      f"lines done in {batch.seconds:.1f} s of the phase, {batch.rate:.1f} lines/s; "
                      f"{batch.done_after} done in all; {batch.status} when the phase ended."]
    return "\n".join(lines)


def run(arguments: argparse.Namespace) -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = RESULTS / f"priority-{stamp}-logs"
    logs.mkdir(parents=True)
    output = arguments.output or RESULTS / f"priority-{stamp}.json"
    services = targets.Services(arguments.broker_url, arguments.redis_url, arguments.postgres_dsn)
    reserve = _reserve(arguments)
    options = targets.GatewayOptions(credits=1_000_000, worker_concurrency=arguments.worker_concurrency,
                                     orchestrator=arguments.batch_lines > 0,
                                     settings={"GATEWAYZ_RESERVED_SLOTS": str(reserve.interactive),
                                               "GATEWAYZ_REALTIME_SLOTS": str(reserve.realtime)})
    batch = BatchProgress(arguments.batch_lines) if arguments.batch_lines else None
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gatewayz-priority-")))
        upstream = stack.enter_context(targets.fake_upstream(logs))
        running = stack.enter_context(targets.distributed(upstream.port, workdir, logs, options, services))
        keys = {priority: targets.create_key(running.environ, logs / "keys.log", options.credits, plan=priority)
                for priority in CLASSES}
        results = uvloop.run(_measure(keys, running.target.origin, arguments, batch))
    document = {
        "started_at": stamp,
        "command": " ".join(["python", "-m", "loadtests.priority", *sys.argv[1:]]),
        "settings": {name: str(value) if isinstance(value, Path) else value for name, value in vars(arguments).items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": [{**asdict(result), "p50_ms": result.p50, "p99_ms": result.p99} for result in results],
        "batch": None if batch is None else {**asdict(batch), "lines_per_second": batch.rate},
    }
    output.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    print("\n" + markdown(results, arguments, batch))
    print(f"\nresults: {output}\nlogs: {logs}")
    return 1 if any(result.errors for result in results) else 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(parse_arguments(argv)))


if __name__ == "__main__":
    main()
