"""Many open streams: ten thousand streamed chat completions at once on one
ingress process, from a slow upstream that sends one token a second.

    python -m loadtests.streams [--targets embedded,distributed] [--streams 10000] [--ramp 60] [--tokens 120]

Each target runs on its own (the same processes and clean-up as the
benchmark's, ``loadtests.targets``; one ingress process), with the pools'
concurrency raised to hold every stream. The load generator opens
``--streams`` connections over ``--ramp`` seconds, each asking the fake
upstream for ``tick:<tokens>`` (a word a second), so all are open together
from the end of the ramp until the first finishes. It reports:

- whether every stream completed (``data: [DONE]``), and the errors;
- memory per stream: the growth of each gateway process's resident memory
  from before the ramp to its peak, divided by the most streams open at once
  (connected and not ended);
- event-loop lag of each gateway process (``loadtests.lagprobe``: a timer
  every 10 ms noting how late it ran), while the streams open (the ramp)
  and while they are all open (the hold), p50, p99 and max;
- what the client saw: time to the first token, and the gaps between tokens
  (one second at the upstream; a gap longer than that is delivery delay);
- CPU of each process, as a share of one core, over the hold;
- billing: what the gateway charged against what the completed streams cost.

The load generator holds its connections in raw asyncio protocols
(``loadtests.sse_client``), and raises its file limit, which the gateway's
processes and the upstream inherit.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import uvloop

from loadtests import lagprobe, targets
from loadtests.benchmark import RESULTS, git_state, run_to_the_end, settled
from loadtests.load import Target, balance_micros, percentile
from loadtests.sse_client import StreamCall, chat_request, open_stream

TARGETS = ("embedded", "distributed")
WARMUP_STREAMS = 20
WARMUP_TOKENS = 2
SAMPLE_EVERY = 0.5  # seconds between memory and CPU samples
DEADLINE_SLACK = 60.0  # seconds past the slowest expected stream before the rest are cut
FD_HEADROOM = 200  # files the load generator needs besides its streams
BALANCE_TIMEOUT = 30.0  # reading the balance, from a gateway that may still be closing thousands of streams


@dataclass
class Sample:
    at: float
    open: int
    rss: dict[str, int]
    cpu: dict[str, float]


@dataclass
class StreamsResult:
    target: str
    streams: int
    ok: int
    errors: dict[str, int]
    peak_open: int
    all_open_s: float | None  # seconds from the first stream's start until every stream had its first token
    hold_s: float  # seconds every stream was open at once (0 if never)
    memory: dict[str, dict[str, float]]  # process -> baseline, peak MB, KB per stream
    lag: dict[str, dict[str, dict[str, Any]]]  # process -> phase -> summary
    client: dict[str, float | None]  # TTFT and gap percentiles, ms
    cpu_cores: dict[str, float]  # process -> share of one core over the hold
    billing: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Hold many streams open on one ingress process.")
    parser.add_argument("--targets", type=_targets, default=TARGETS, help="embedded,distributed (default both)")
    parser.add_argument("--streams", type=int, default=10_000, help="streams open at once (default 10000)")
    parser.add_argument("--ramp", type=float, default=60.0, help="seconds over which they are opened (default 60)")
    parser.add_argument("--tokens", type=int, default=120,
                        help="words in each answer, one a second (default 120: about 60 s all open after the ramp)")
    parser.add_argument("--worker-processes", type=int, default=1,
                        help="distributed: `gatewayz worker` processes sharing the streams (default 1)")
    parser.add_argument("--credits", type=int, default=1_000_000, help="credits of the API key")
    parser.add_argument("--gateway-setting", dest="gateway_settings", action="append", default=[],
                        metavar="GATEWAYZ_NAME=VALUE", help="an extra setting for every gateway process (repeatable)")
    parser.add_argument("--broker-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default loadtests/results/streams-<time>.json)")
    arguments = parser.parse_args(argv)
    if min(arguments.streams, arguments.tokens, arguments.worker_processes) < 1 or arguments.ramp < 0:
        parser.error("--streams, --tokens and --worker-processes must be positive, --ramp not negative")
    return arguments


def _targets(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    if not chosen or set(chosen) - set(TARGETS):
        raise argparse.ArgumentTypeError(f"targets are among {', '.join(TARGETS)}")
    return chosen


async def run_streams(running: targets.Running, upstream: targets.Upstream, arguments: argparse.Namespace,
                      probes: Path) -> StreamsResult:
    """Warm up, open the streams over the ramp, wait for them all (or the
    deadline), and summarise what the processes and the client saw."""
    target = running.target
    host, _, port = target.origin.removeprefix("http://").partition(":")
    # The fake upstream holds as many streams, in plain Starlette: a yardstick for the memory figures.
    pids = {**running.pids, "upstream": upstream.pid}
    processes = {name: psutil.Process(pid) for name, pid in pids.items()}
    async with httpx.AsyncClient(base_url=target.origin, timeout=BALANCE_TIMEOUT,
                                 headers={"authorization": f"Bearer {target.api_key}"}) as client:
        before = await balance_micros(client)
        warmed = await _warm_up(host, int(port), target)
        print(f"  warm-up: {warmed} streams", flush=True)
        request = chat_request(host, int(port), target.model, f"tick:{arguments.tokens}", target.api_key)
        calls: list[StreamCall] = []
        samples: list[Sample] = []
        sampling = asyncio.create_task(_sample(processes, calls, samples))
        await asyncio.sleep(SAMPLE_EVERY * 2)  # the baseline, before any stream
        start = time.monotonic()
        await _open(calls, host, int(port), request, arguments.streams, arguments.ramp)
        # From the last stream's start: a gateway slow to accept connections makes the ramp longer than asked.
        deadline = time.monotonic() + arguments.tokens + DEADLINE_SLACK
        print(f"  {len(calls)} streams opened in {time.monotonic() - start:.1f}s", flush=True)
        pending = [call.done for call in calls if not call.done.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(deadline - time.monotonic(), 0))
        for call in calls:
            call.close("deadline")
        end = time.monotonic()
        await asyncio.sleep(SAMPLE_EVERY)
        sampling.cancel()
        result = _summarise(target.name, calls, samples, start, end, running, probes)
        # One prompt token ("tick:N") each; N words and "Echo:" out.
        expected = (result.ok * targets.cost_micros(1, arguments.tokens + 1)
                    + warmed * targets.cost_micros(1, WARMUP_TOKENS + 1))
        try:
            bill = await settled(target, client, before, expected, result.ok + warmed)
        except httpx.HTTPError as error:
            result.notes.append(f"the balance could not be read after the run ({type(error).__name__}): "
                                f"billing not checked")
            return result
    # A stream cut short is charged what it delivered, which the client does not count: no exact total then.
    result.billing = {**dataclasses.asdict(bill), "exact": bill.exact if not result.errors else None}
    return result


async def _warm_up(host: str, port: int, target: Target) -> int:
    """One stream that must succeed (a worker may still be connecting), then a few at once."""
    request = chat_request(host, port, target.model, f"tick:{WARMUP_TOKENS}", target.api_key)
    for _ in range(50):
        call = await open_stream(host, port, request)
        await call.done
        if call.error is None:
            break
        await asyncio.sleep(0.2)
    else:
        raise RuntimeError(f"{target.name}: no stream succeeded during warm-up (last: {call.error})")
    calls = [await open_stream(host, port, request) for _ in range(WARMUP_STREAMS)]
    await asyncio.wait([call.done for call in calls])
    return 1 + sum(call.error is None for call in calls)


async def _open(calls: list[StreamCall], host: str, port: int, request: bytes, count: int, ramp: float) -> None:
    """Open ``count`` streams evenly over ``ramp`` seconds (in steps of 10 ms)."""
    start = time.monotonic()
    opening: set[asyncio.Task[StreamCall]] = set()
    while len(calls) + len(opening) < count:
        due = count if ramp == 0 else min(count, math.ceil(count * (time.monotonic() - start) / ramp))
        for _ in range(due - len(calls) - len(opening)):
            task = asyncio.create_task(open_stream(host, port, request))
            opening.add(task)
            task.add_done_callback(lambda done: (opening.discard(done), calls.append(done.result())))
        await asyncio.sleep(0.01)
    while opening:
        await asyncio.sleep(0.01)


async def _sample(processes: dict[str, psutil.Process], calls: list[StreamCall], samples: list[Sample]) -> None:
    while True:
        rss, cpu = {}, {}
        for name, process in processes.items():
            try:
                rss[name] = process.memory_info().rss
                times = process.cpu_times()
                cpu[name] = times.user + times.system
            except psutil.Error:
                continue
        now = time.monotonic()
        # Connected and not ended: what the gateway holds, answered yet or not.
        opened = sum(1 for call in calls if call.connected_at is not None and not call.done.done())
        samples.append(Sample(now, opened, rss, cpu))
        await asyncio.sleep(SAMPLE_EVERY)


def _summarise(name: str, calls: list[StreamCall], samples: list[Sample], start: float, end: float,
               running: targets.Running, probes: Path) -> StreamsResult:
    errors = Counter(call.error for call in calls if call.error is not None)
    first_tokens = [call.tokens[0] for call in calls if call.tokens]
    ends = [call.ended_at for call in calls if call.ended_at is not None]
    all_open = max(first_tokens) if len(first_tokens) == len(calls) else None
    first_end = min(ends) if ends else end
    hold = (all_open, first_end) if all_open is not None and all_open < first_end else None
    notes = []
    if hold is None:
        notes.append("the streams were never all open at once: the ramp outlasted the first stream, or some "
                     "never got a token")
    baseline = samples[0]
    peak = max(samples, key=lambda sample: sample.open)
    memory = {}
    for process, rss in baseline.rss.items():
        top = max(sample.rss.get(process, 0) for sample in samples)
        memory[process] = {"baseline_mb": round(rss / 2**20, 1), "peak_mb": round(top / 2**20, 1),
                           "kb_per_stream": round((top - rss) / 1024 / peak.open, 1) if peak.open else 0.0}
    lag = _lags(running, probes, start, all_open or end, hold)
    gaps = [(later - earlier) * 1000 for call in calls for earlier, later in itertools.pairwise(call.tokens)]
    ttfts = [(call.tokens[0] - call.started) * 1000 for call in calls if call.tokens]
    client = {"ttft_p50_ms": _round(percentile(ttfts, 0.5)), "ttft_p99_ms": _round(percentile(ttfts, 0.99)),
              "gap_p50_ms": _round(percentile(gaps, 0.5)), "gap_p99_ms": _round(percentile(gaps, 0.99)),
              "gap_max_ms": _round(max(gaps) if gaps else None)}
    cpu_cores: dict[str, float] = {}
    if hold is not None:
        inside = [sample for sample in samples if hold[0] <= sample.at <= hold[1]]
        if len(inside) >= 2:
            first, last = inside[0], inside[-1]
            cpu_cores = {process: round((last.cpu[process] - first.cpu[process]) / (last.at - first.at), 3)
                         for process in first.cpu if process in last.cpu}
    return StreamsResult(
        target=name, streams=len(calls), ok=sum(call.error is None for call in calls), errors=dict(errors),
        peak_open=peak.open, all_open_s=round(all_open - start, 1) if all_open is not None else None,
        hold_s=round(hold[1] - hold[0], 1) if hold else 0.0, memory=memory, lag=lag, client=client,
        cpu_cores=cpu_cores, notes=notes)


def _lags(running: targets.Running, probes: Path, start: float, opened: float,
          hold: tuple[float, float] | None) -> dict[str, dict[str, dict[str, Any]]]:
    """Each gateway process's lag while the streams opened and while all were open."""
    names = {pid: name for name, pid in running.pids.items()}
    phases = {"ramp": (start, opened), **({"hold": hold} if hold else {})}
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for phase, (begin, finish) in phases.items():
        for pid, samples in lagprobe.lags(probes, begin, finish).items():
            found.setdefault(names.get(pid, str(pid)), {})[phase] = lagprobe.summary(samples)
    return found


def _per_token(result: StreamsResult, process: str) -> float | None:
    """Microseconds of ``process``'s CPU per token relayed while every
    stream was open (each stream then gets a token a second)."""
    cores = result.cpu_cores.get(process)
    return None if cores is None or not result.peak_open else round(cores * 1e6 / result.peak_open)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def markdown(results: list[StreamsResult]) -> str:
    lines = [
        "| target | streams | completed | errors | all open after s | held s | process | KB per stream "
        "| RSS before → peak MB | loop lag p50 / p99 / max ms (all open) | (opening) | CPU cores (all open) "
        "| CPU µs per token (all open) |",
        "|---|--:|--:|---|--:|--:|---|--:|---|---|---|--:|--:|",
    ]
    for result in results:
        errors = ", ".join(f"{name}: {count}" for name, count in sorted(result.errors.items())) or "-"
        first = True
        for process, memory in result.memory.items():
            head = (f"| {result.target} | {result.streams} | {result.ok} | {errors} | {_figure(result.all_open_s)} "
                    f"| {result.hold_s:.0f} " if first else "| | | | | | ")
            first = False
            lag = result.lag.get(process, {})
            lines.append(
                f"{head}| {process} | {memory['kb_per_stream']:.1f} "
                f"| {memory['baseline_mb']:.0f} → {memory['peak_mb']:.0f} | {_lag(lag.get('hold'))} "
                f"| {_lag(lag.get('ramp'))} | {_cores(result.cpu_cores.get(process))} "
                f"| {_figure(_per_token(result, process))} |")
    lines += ["", "What the client saw (every stream; the upstream sends a word a second):", "",
              "| target | TTFT p50 ms | TTFT p99 ms | gap p50 ms | gap p99 ms | gap max ms "
              "| charged | expected | exact |",
              "|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for result in results:
        client, bill = result.client, result.billing or {}
        lines.append(f"| {result.target} | {_figure(client['ttft_p50_ms'])} | {_figure(client['ttft_p99_ms'])} "
                     f"| {_figure(client['gap_p50_ms'])} | {_figure(client['gap_p99_ms'])} "
                     f"| {_figure(client['gap_max_ms'])} | {bill.get('spent_micros', '-')} "
                     f"| {bill.get('expected_micros', '-')} | {_exact(bill.get('exact'))} |")
    return "\n".join(lines)


def _exact(exact: bool | None) -> str:
    return "n/a (streams cut short)" if exact is None else "yes" if exact else "NO"


def _lag(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "-"
    return f"{_figure(summary['p50_ms'])} / {_figure(summary['p99_ms'])} / {_figure(summary['max_ms'])}"


def _cores(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


@contextmanager
def _target(name: str, upstream: targets.Upstream, workdir: Path, logs: Path, probes: Path,
            arguments: argparse.Namespace) -> Iterator[targets.Running]:
    # Every pool must hold its share of the streams at once (and a few more for the warm-up).
    share = math.ceil(arguments.streams / (arguments.worker_processes if name == "distributed" else 1))
    options = targets.GatewayOptions(arguments.credits, min(share + WARMUP_STREAMS, 10_000),
                                     dict(setting.split("=", 1) for setting in arguments.gateway_settings),
                                     worker_processes=arguments.worker_processes)
    (workdir / name).mkdir()
    launch = lagprobe.launcher(probes)
    if name == "embedded":
        with targets.embedded(upstream.port, workdir / name, logs, options, launcher=launch) as running:
            yield running
        return
    services = targets.Services(arguments.broker_url, arguments.redis_url, arguments.postgres_dsn)
    with targets.distributed(upstream.port, workdir / name, logs, options, services, launcher=launch) as running:
        yield running


def run(arguments: argparse.Namespace) -> int:
    limit = targets.raise_fd_limit()
    if limit < arguments.streams + FD_HEADROOM:
        print(f"the file limit is {limit}: too low for {arguments.streams} streams", file=sys.stderr)
        return 2
    if "embedded" in arguments.targets and limit < 2 * arguments.streams + FD_HEADROOM:
        # One process holds each stream's client connection and its upstream one.
        print(f"the file limit is {limit}: the embedded gateway cannot hold {arguments.streams} streams "
              f"(two sockets each); at most {(limit - FD_HEADROOM) // 2}", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    measured = git_state()
    logs = RESULTS / f"streams-{stamp}-logs"
    logs.mkdir(parents=True)
    output = arguments.output or RESULTS / f"streams-{stamp}.json"
    results: list[StreamsResult] = []
    failures: dict[str, str] = {}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gatewayz-streams-")))
        upstream = stack.enter_context(targets.fake_upstream(logs))
        for name in arguments.targets:
            probes = workdir / f"{name}-lag"
            probes.mkdir()
            print(f"{name}: starting", flush=True)
            try:
                with (_target(name, upstream, workdir, logs, probes, arguments) as running,
                      asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner):
                    result = runner.run(run_streams(running, upstream, arguments, probes))
            except RuntimeError as error:
                print(f"{name}: FAILED: {error}", flush=True)
                failures[name] = str(error)
                continue
            print(f"  {name}: {result.ok}/{result.streams} completed, errors {result.errors or '-'}", flush=True)
            results.append(result)
    document = {
        "started_at": stamp,
        "command": " ".join(["python", "-m", "loadtests.streams", *sys.argv[1:]]),
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(arguments).items()},
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "git": measured,  # the code that ran, not what the tree holds by the end
        "results": [dataclasses.asdict(result) for result in results],
        "failures": failures,
    }
    output.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    print("\n" + markdown(results))
    for result in results:
        for note in result.notes:
            print(f"\n{result.target}: {note}")
    for name, reason in failures.items():
        print(f"\n{name} FAILED: {reason}")
    print(f"\nresults: {output}\nlogs: {logs}")
    failed = failures or any(result.errors or (result.billing or {}).get("exact") is False for result in results)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> None:
    run_to_the_end(run, parse_arguments(argv))


if __name__ == "__main__":
    main()
