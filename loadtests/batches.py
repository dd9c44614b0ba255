"""The batch benchmark: a large chat batch through the real API, with
interactive requests measured while it runs; and the validation of a
large input file.

    python -m loadtests.batches [--mode distributed|embedded] [--lines 50000] [--validate-mb 200]

1. **throughput**: uploads a JSONL file of ``--lines`` chat requests (the
   fake upstream answers at once), creates the batch and polls it until it
   ends. Meanwhile ``--probe-users`` closed-loop users send interactive
   JSON requests, first for a few seconds before the batch (the baseline),
   then for as long as it runs. Reports lines per second (from the batch's
   creation until it is seen completed, polled every 0.5 s), every line accounted for
   (output + error lines = lines), the interactive latency and queue wait
   before and during the batch, and each process's peak RSS.
2. **validation** (``--validate-mb``): a file of that size (4 KB lines),
   uploaded and validated: the upload's and the validation's time, and the
   peak RSS of each process meanwhile; the batch is then cancelled.

Writes the figures as JSON to ``loadtests/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import uvloop

from loadtests import targets
from loadtests.load import percentile

RESULTS = Path(__file__).parent / "results"
BASELINE = 5.0  # seconds of interactive requests before the batch
LINE_BYTES = 4200  # of each request in the validation file: 200 MB is then under 50,000 lines, OpenAI's limit


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A large batch, and interactive latency while it runs.")
    parser.add_argument("--mode", choices=("distributed", "embedded"), default="distributed")
    parser.add_argument("--lines", type=int, default=50_000, help="requests in the batch (default 50,000; 0: skip)")
    parser.add_argument("--validate-mb", type=int, default=0, help="also validate a file of this size (MB)")
    parser.add_argument("--worker-concurrency", type=int, default=32)
    parser.add_argument("--probe-users", type=int, default=2, help="interactive users measured meanwhile")
    parser.add_argument("--broker-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    return parser.parse_args(argv)


class PeakMemory:
    """Samples each process's RSS twice a second; the peak of each, in MB."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak: dict[str, float] = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for name, process in self._processes.items():
                try:
                    rss = sum(part.memory_info().rss for part in [process, *process.children(recursive=True)])
                except psutil.Error:
                    continue
                self.peak[name] = max(self.peak[name], rss / 2**20)
            self._stop.wait(0.5)

    @contextmanager
    def watching(self) -> Iterator[PeakMemory]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


@dataclass
class Interactive:
    latency_ms: list[float] = field(default_factory=list)
    queue_ms: list[int] = field(default_factory=list)
    errors: int = 0

    def figures(self) -> dict[str, Any]:
        return {"requests": len(self.latency_ms), "errors": self.errors,
                "latency_p50_ms": percentile(self.latency_ms, 0.5), "latency_p99_ms": percentile(self.latency_ms, 0.99),
                "queue_p50_ms": percentile(self.queue_ms, 0.5), "queue_p99_ms": percentile(self.queue_ms, 0.99)}


async def _interactive(origin: str, key: str, result: Interactive, running: asyncio.Event) -> None:
    body = orjson.dumps({"model": targets.MODEL, "messages": [{"role": "user", "content": "interactive hello"}]})
    async with httpx.AsyncClient(base_url=origin, headers={"authorization": f"Bearer {key}",
                                                           "content-type": "application/json"}, timeout=60) as client:
        while running.is_set():
            started = time.perf_counter()
            try:
                response = await client.post("/v1/chat/completions", content=body)
            except httpx.HTTPError:
                result.errors += 1
                continue
            if response.status_code != 200:
                result.errors += 1
                continue
            result.latency_ms.append((time.perf_counter() - started) * 1000)
            result.queue_ms.append(int(response.headers.get("x-gatewayz-queue-ms", "0")))


def _requests_file(path: Path, lines: int, *, pad: int = 0) -> Path:
    filler = "x" * pad
    with path.open("wb") as out:
        for index in range(lines):
            out.write(orjson.dumps({"custom_id": f"r{index}", "method": "POST", "url": "/v1/chat/completions",
                                    "body": {"model": targets.MODEL, "max_tokens": 16, "messages": [
                                        {"role": "user", "content": f"batch line {index} {filler}"}]}}) + b"\n")
    return path


def _upload(client: httpx.Client, path: Path) -> str:
    with path.open("rb") as content:
        response = client.post("/v1/files", data={"purpose": "batch"}, files={"file": (path.name, content)},
                               timeout=600)
    response.raise_for_status()
    file_id: str = response.json()["id"]
    return file_id


def _poll(client: httpx.Client, batch_id: str, until: tuple[str, ...], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch: dict[str, Any] = client.get(f"/v1/batches/{batch_id}").json()
        if batch["status"] in until:
            return batch
        if time.monotonic() > deadline:
            raise RuntimeError(f"batch {batch_id} still {batch['status']} after {timeout:g}s")
        time.sleep(0.5)


def _count_lines(client: httpx.Client, file_id: str) -> int:
    count = 0
    with client.stream("GET", f"/v1/files/{file_id}/content", timeout=600) as response:
        for line in response.iter_lines():
            count += bool(line.strip())
    return count


async def _throughput(origin: str, key: str, path: Path, lines: int, users: int) -> dict[str, Any]:
    running = asyncio.Event()
    running.set()
    baseline = Interactive()
    probes = [asyncio.create_task(_interactive(origin, key, baseline, running)) for _ in range(users)]
    await asyncio.sleep(BASELINE)
    running.clear()
    await asyncio.gather(*probes)
    during = Interactive()
    running.set()
    probes = [asyncio.create_task(_interactive(origin, key, during, running)) for _ in range(users)]
    with httpx.Client(base_url=origin, headers={"authorization": f"Bearer {key}"}, timeout=60) as client:
        file_id = await asyncio.to_thread(_upload, client, path)
        started = time.monotonic()
        created = client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                                   "completion_window": "24h"}).json()
        batch = await asyncio.to_thread(_poll, client, created["id"], ("completed", "failed", "expired"), 3600)
        wall = time.monotonic() - started
        running.clear()
        await asyncio.gather(*probes)
        answered = await asyncio.to_thread(_count_lines, client, batch["output_file_id"])
        failed = await asyncio.to_thread(_count_lines, client, batch["error_file_id"])
    return {"batch": batch["id"], "status": batch["status"], "lines": lines, "request_counts": batch["request_counts"],
            "output_lines": answered, "error_lines": failed, "accounted": answered + failed == lines,
            "seconds": wall, "lines_per_second": lines / wall,
            "interactive_before": baseline.figures(), "interactive_during": during.figures()}


def _validation(origin: str, key: str, path: Path) -> dict[str, Any]:
    with httpx.Client(base_url=origin, headers={"authorization": f"Bearer {key}"}, timeout=600) as client:
        started = time.monotonic()
        file_id = _upload(client, path)
        uploaded = time.monotonic()
        created = client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                                   "completion_window": "24h"}).json()
        batch = _poll(client, created["id"], ("in_progress", "failed", "completed"), 3600)
        validated = time.monotonic()
        if batch["status"] == "failed":
            print(f"validation failed: {batch['errors']}", flush=True)
        client.post(f"/v1/batches/{created['id']}/cancel")
    return {"file_mb": path.stat().st_size / 2**20, "status": batch["status"],
            "lines": batch["request_counts"]["total"], "upload_seconds": uploaded - started,
            "validation_seconds": validated - uploaded}


def run(arguments: argparse.Namespace) -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = RESULTS / f"batches-{stamp}-logs"
    logs.mkdir(parents=True)
    services = targets.Services(arguments.broker_url, arguments.redis_url, arguments.postgres_dsn)
    options = targets.GatewayOptions(credits=1_000_000, worker_concurrency=arguments.worker_concurrency,
                                     orchestrator=True)
    document: dict[str, Any] = {"started_at": stamp, "command": " ".join(["python", "-m", "loadtests.batches",
                                                                          *sys.argv[1:]]),
                                "settings": vars(arguments), "machine": {"cpus": os.cpu_count(),
                                                                         "python": platform.python_version()}}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gatewayz-batches-")))
        upstream = stack.enter_context(targets.fake_upstream(logs))
        if arguments.mode == "distributed":
            running = stack.enter_context(targets.distributed(upstream.port, workdir, logs, options, services))
        else:
            running = stack.enter_context(targets.embedded(upstream.port, workdir, logs, options))
        origin, key = running.target.origin, running.target.api_key or ""
        if arguments.lines:
            path = _requests_file(workdir / "batch.jsonl", arguments.lines)
            print(f"throughput: {arguments.lines} lines ({path.stat().st_size / 2**20:.1f} MB)", flush=True)
            with PeakMemory(running.pids).watching() as memory:
                document["throughput"] = uvloop.run(_throughput(origin, key, path, arguments.lines,
                                                                arguments.probe_users))
            document["throughput"]["peak_rss_mb"] = memory.peak
            print(orjson.dumps(document["throughput"], option=orjson.OPT_INDENT_2).decode(), flush=True)
        if arguments.validate_mb:
            lines = arguments.validate_mb * 2**20 // LINE_BYTES
            path = _requests_file(workdir / "large.jsonl", lines, pad=LINE_BYTES - 180)
            print(f"validation: {lines} lines, {path.stat().st_size / 2**20:.1f} MB", flush=True)
            with PeakMemory(running.pids).watching() as memory:
                document["validation"] = _validation(origin, key, path)
            document["validation"]["peak_rss_mb"] = memory.peak
            print(orjson.dumps(document["validation"], option=orjson.OPT_INDENT_2).decode(), flush=True)
    output = RESULTS / f"batches-{stamp}.json"
    output.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2, default=str))
    print(f"\nresults: {output}\nlogs: {logs}")
    throughput = document.get("throughput")
    return 0 if throughput is None or throughput["accounted"] else 1


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(parse_arguments(argv)))


if __name__ == "__main__":
    main()
