"""The side-by-side benchmark: the fake upstream directly, the gateway
embedded (``gatewayz serve``) and the gateway distributed (``ingress`` +
``worker`` + ``billing`` on RabbitMQ, Redis and PostgreSQL; ``--ingress-workers``
and ``--worker-processes`` to scale it out) and, when asked, the LiteLLM proxy
(``--targets ...,litellm``), all in front of the same fake upstream, at the
same concurrency levels, JSON and streaming, then streams from a slow
upstream at high concurrency.

    python -m loadtests.benchmark [--requests 500] [--duration 10] [--concurrency 1,16,64] [--tracing off,on]

``--tracing on`` runs each gateway with every span of every request
exported over OTLP/HTTP to a loopback sink (``loadtests/otlp_sink.py``,
which counts and discards them; its CPU is reported apart, as a collector's
would be elsewhere); ``off,on`` runs each gateway twice, named
``embedded`` and ``embedded+tracing``.

It prints markdown tables and writes the figures as JSON to
``loadtests/results/``. The targets run one after another, so they do not
compete with each other for the CPU; the load generator shares the machine
with them all. Every process, the database and the broker queues the run
made are removed when it ends, on error or Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TypeVar

import httpx
import orjson
import uvloop

from loadtests import litellm_proxy, report, targets
from loadtests.cpu import SERVICE_PORTS, CpuMeter, listening_pids
from loadtests.load import LevelResult, Target, balance_micros, chat_body, measure, send

RESULTS = Path(__file__).parent / "results"
TARGETS = ("direct", "embedded", "distributed", "litellm")
DEFAULT_TARGETS = ("direct", "embedded", "distributed")  # LiteLLM is installed on first use: asked for by name
WARMUP_ATTEMPTS = 50
SETTLE_TIMEOUT = 30.0
# CPU of these is counted with their children (per-connection backends, helpers,
# the processes of `gatewayz ingress --workers`, LiteLLM's).
WITH_CHILDREN = frozenset({"postgres", "rabbitmq", "ingress", "litellm"})

T = TypeVar("T")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark the gateway against its fake upstream, side by side.")
    parser.add_argument("--requests", type=int, default=500, help="requests per level, at most (default 500)")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds per level after which no request is started (default 10)")
    parser.add_argument("--concurrency", type=_levels, default=(1, 16, 64),
                        help="comma-separated concurrency levels (default 1,16,64)")
    parser.add_argument("--targets", type=_targets, default=DEFAULT_TARGETS,
                        help="comma-separated subset of direct,embedded,distributed,litellm "
                             "(default direct,embedded,distributed)")
    parser.add_argument("--words", type=int, default=15,
                        help="words in each JSON reply (default 15: 16 tokens with the `Echo:` prefix)")
    parser.add_argument("--stream-words", type=int, default=63,
                        help="words in each streamed reply (default 63: 64 tokens)")
    parser.add_argument("--slow-concurrency", type=int, default=256,
                        help="concurrency of the slow-upstream stream level (default 256; 0: none)")
    parser.add_argument("--slow-upstream", type=_pacing, default=(200, 10), metavar="FIRST_MS:EVERY_MS",
                        help="the slow upstream: ms to the first token, ms between tokens (default 200:10)")
    parser.add_argument("--worker-concurrency", type=int, default=64,
                        help="jobs each pool runs at once: each distributed worker's and the embedded pool's "
                             "--concurrency (default 64)")
    parser.add_argument("--ingress-workers", type=int, default=1,
                        help="distributed: `gatewayz ingress --workers`, processes on the port (default 1)")
    parser.add_argument("--worker-processes", type=int, default=1,
                        help="distributed: `gatewayz worker` processes for the provider (default 1)")
    parser.add_argument("--litellm-venv", type=Path, default=litellm_proxy.VENV,
                        help="where LiteLLM is installed on first use (default loadtests/.litellm-venv)")
    parser.add_argument("--credits", type=int, default=1_000_000, help="credits of the benchmark's API keys")
    parser.add_argument("--gateway-setting", dest="gateway_settings", type=_setting, action="append", default=[],
                        metavar="GATEWAYZ_NAME=VALUE",
                        help="an extra setting for every gateway process, e.g. GATEWAYZ_PERSISTENT_JOBS=false "
                             "(repeatable)")
    parser.add_argument("--tracing", type=_tracing, default=(False,), metavar="off,on",
                        help="run each gateway with tracing off, on (every span exported to a loopback OTLP sink), "
                             "or both in turn (default off)")
    parser.add_argument("--broker-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="admin connection used to create and drop the run's database")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default loadtests/results/bench-<time>.json)")
    arguments = parser.parse_args(argv)
    if min(arguments.requests, arguments.words, arguments.stream_words, arguments.ingress_workers,
           arguments.worker_processes) < 1 or arguments.duration <= 0 or arguments.slow_concurrency < 0:
        parser.error("--requests, --duration, --words, --stream-words, --ingress-workers and --worker-processes "
                     "must be positive, --slow-concurrency not negative")
    return arguments


def _levels(text: str) -> tuple[int, ...]:
    levels = tuple(int(part) for part in text.split(",") if part.strip())
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels are positive integers")
    return levels


def _pacing(text: str) -> tuple[int, int]:
    first, colon, every = text.partition(":")
    if not colon or not first.isdigit() or not every.isdigit():
        raise argparse.ArgumentTypeError("the slow upstream looks like FIRST_MS:EVERY_MS, e.g. 200:10")
    return int(first), int(every)


def _setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.startswith("GATEWAYZ_"):
        raise argparse.ArgumentTypeError("settings look like GATEWAYZ_NAME=VALUE")
    return name, value


def _tracing(text: str) -> tuple[bool, ...]:
    modes = {"off": False, "on": True}
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    if not chosen or set(chosen) - set(modes):
        raise argparse.ArgumentTypeError("--tracing is off, on or off,on")
    return tuple(dict.fromkeys(modes[part] for part in chosen))


def _targets(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    if not chosen or set(chosen) - set(TARGETS):
        raise argparse.ArgumentTypeError(f"targets are among {', '.join(TARGETS)}")
    return chosen


async def bench_target(
    target: Target, meter: CpuMeter, arguments: argparse.Namespace
) -> tuple[list[LevelResult], report.Billing | None]:
    """Warm the target up (connections, pools, queues), run every level, then
    check that the gateway charged each successful request exactly once."""
    # The fake upstream counts one prompt token ("words:N") and N + 1 completion tokens ("Echo:" and N words).
    kinds = {False: (f"words:{arguments.words}", targets.cost_micros(1, arguments.words + 1)),
             True: (f"words:{arguments.stream_words}", targets.cost_micros(1, arguments.stream_words + 1))}
    slow = f"pace:{arguments.stream_words}:{arguments.slow_upstream[0]}:{arguments.slow_upstream[1]}"
    levels = [(stream, concurrency, kinds[stream][0], "instant", arguments.requests)
              for stream in (False, True) for concurrency in arguments.concurrency]
    if arguments.slow_concurrency:
        # Timed only: --requests would end it after a wave or two of slow streams.
        levels.append((True, arguments.slow_concurrency, slow, "{}+{}ms/token".format(*arguments.slow_upstream),
                       sys.maxsize))
    results = []
    async with AsyncExitStack() as stack:
        users = max(level[1] for level in levels)
        clients = [await stack.enter_async_context(target.client()) for _ in range(users)]
        client = clients[0]
        before = await balance_micros(client) if target.billed else None
        warming = time.monotonic()
        warmed = await _warm_up(target, clients, {stream: prompt for stream, (prompt, _) in kinds.items()})
        print(f"  warm-up: {sum(warmed.values())} requests in {time.monotonic() - warming:.1f}s", flush=True)
        succeeded = sum(warmed.values())
        expected = sum(ok * kinds[stream][1] for stream, ok in warmed.items())
        for stream, concurrency, prompt, upstream, requests in levels:
            cpu_before = meter.snapshot()
            result = await measure(target, clients, prompt=prompt, stream=stream, concurrency=concurrency,
                                   requests=requests, duration=arguments.duration)
            result.cpu_s = meter.spent(cpu_before, meter.snapshot())
            result.upstream = upstream
            print(f"  {_cell_line(result)}", flush=True)
            results.append(result)
            succeeded += result.ok
            expected += result.ok * kinds[stream][1]
        if before is None:
            return results, None
        billing = await settled(target, client, before, expected, succeeded)
    print(f"  {target.name}: charged {billing.spent_micros} micro-credits for {billing.requests_ok} requests "
          f"(expected {billing.expected_micros}) after {billing.settled_after_s}s", flush=True)
    return results, billing


async def _warm_up(target: Target, clients: list[httpx.AsyncClient], prompts: dict[bool, str]) -> dict[bool, int]:
    """Wait until one request succeeds (a worker may still be connecting to
    its queue), then open every client's connection with a short burst of
    each kind. Returns how many requests of each kind (streamed or not) succeeded."""
    body = chat_body(target.model, prompts[False], False)
    for _ in range(WARMUP_ATTEMPTS):
        sample = await send(clients[0], body, False)
        if sample.error is None:
            break
        await asyncio.sleep(0.2)
    else:
        raise RuntimeError(f"{target.name}: no request succeeded during warm-up (last: {sample.error})")
    succeeded = {False: 1, True: 0}
    for stream in (False, True):
        burst = await measure(target, clients, prompt=prompts[stream], stream=stream, concurrency=len(clients),
                              requests=len(clients), duration=10.0)
        succeeded[stream] += burst.ok
    return succeeded


async def settled(
    target: Target, client: httpx.AsyncClient, before: int, expected: int, requests: int
) -> report.Billing:
    """Wait (bounded) for settlement to catch up with the run, then read what it charged."""
    start = time.monotonic()
    spent = before - await balance_micros(client)
    while spent < expected and time.monotonic() - start < SETTLE_TIMEOUT:
        await asyncio.sleep(0.25)
        spent = before - await balance_micros(client)
    return report.Billing(target.name, requests, expected, spent, round(time.monotonic() - start, 2))


def _cell_line(result: LevelResult) -> str:
    line = (f"{result.target:<11} {report.mode(result)} c={result.concurrency:<3} "
            f"ok={result.ok}/{result.started} {result.requests_per_s} req/s "
            f"p50={result.p50_ms}ms p99={result.p99_ms}ms")
    if result.stream:
        line += f" ttft p50={result.ttft_p50_ms}ms p99={result.ttft_p99_ms}ms"
    return line + (f" errors={result.errors}" if result.errors else "")


@contextmanager
def _started(name: str, upstream: targets.Upstream, workdir: Path, logs: Path,
             arguments: argparse.Namespace, environ: dict[str, str]) -> Iterator[targets.Running]:
    """One target, running for the ``with`` block."""
    if name == "direct":
        with targets.direct(upstream.port) as running:
            yield running
        return
    target_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
    if name == "litellm":
        with litellm_proxy.litellm(upstream.port, target_dir, logs, arguments.litellm_venv) as running:
            yield running
        return
    options = targets.GatewayOptions(arguments.credits, arguments.worker_concurrency,
                                     {**dict(arguments.gateway_settings), **environ},
                                     ingress_workers=arguments.ingress_workers,
                                     worker_processes=arguments.worker_processes)
    if name == "embedded":
        with targets.embedded(upstream.port, target_dir, logs, options) as running:
            yield running
        return
    services = targets.Services(arguments.broker_url, arguments.redis_url, arguments.postgres_dsn)
    with targets.distributed(upstream.port, target_dir, logs, options, services) as running:
        yield running


def _runs(arguments: argparse.Namespace) -> Iterator[tuple[str, bool]]:
    """(target, tracing) in the order they run: a gateway with tracing off,
    then on; the upstream alone and LiteLLM have no tracing of ours."""
    for name in arguments.targets:
        for tracing in arguments.tracing if name in ("embedded", "distributed") else (False,):
            yield name, tracing


def _meter(name: str, running: targets.Running, upstream: targets.Upstream,
           sink: targets.Upstream | None = None) -> CpuMeter:
    pids = {"loadgen": os.getpid(), "upstream": upstream.pid, **running.pids}
    if sink is not None:
        pids["otlp-sink"] = sink.pid
    if name == "distributed":
        pids |= listening_pids(SERVICE_PORTS)
    return CpuMeter(pids, with_children=WITH_CHILDREN)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def run(arguments: argparse.Namespace) -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = RESULTS / f"bench-{stamp}-logs"
    logs.mkdir(parents=True)
    output = arguments.output or RESULTS / f"bench-{stamp}.json"
    results: list[LevelResult] = []
    billing: list[report.Billing] = []
    failures: dict[str, str] = {}
    spans: dict[str, dict[str, int]] = {}  # what the OTLP sink received from each tracing run
    started = time.monotonic()
    targets.raise_fd_limit()
    load_before = os.getloadavg()
    measured = git_state()
    print(f"logs: {logs}", flush=True)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gatewayz-bench-")))
        upstream = stack.enter_context(targets.fake_upstream(logs))
        sink = stack.enter_context(targets.otlp_sink(logs)) if True in arguments.tracing else None
        for name, tracing in _runs(arguments):
            label = f"{name}+tracing" if tracing else name
            print(f"{label}: starting", flush=True)
            starting = time.monotonic()
            exported = targets.sink_stats(sink)
            try:
                with _started(name, upstream, workdir, logs, arguments,
                              targets.tracing_environ(tracing, sink)) as running:
                    print(f"{label}: ready after {time.monotonic() - starting:.1f}s", flush=True)
                    meter = _meter(name, running, upstream, sink if tracing else None)
                    target = dataclasses.replace(running.target, name=label)
                    cells, bill = _run(bench_target(target, meter, arguments))
            except RuntimeError as error:  # a target that cannot start or serve: report it, measure the rest
                print(f"{label}: FAILED: {error}", flush=True)
                failures[label] = str(error)
                continue
            results += cells
            billing += [bill] if bill is not None else []
            if tracing:  # read once the gateway stopped: it flushes its last spans on the way out
                spans[label] = {key: value - exported[key] for key, value in targets.sink_stats(sink).items()}
                print(f"{label}: the sink received {spans[label]['spans']} spans in {spans[label]['exports']} "
                      "exports", flush=True)
    problems = report.log_problems(logs)
    document = {
        "started_at": stamp,
        "wall_s": round(time.monotonic() - started, 1),
        "command": " ".join(["python", "-m", "loadtests.benchmark", *sys.argv[1:]]),
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(arguments).items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "git": measured,  # the code that ran, not what the tree holds by the end
        "results": [dataclasses.asdict(result) for result in results],
        "added_latency": report.added_latency(results),
        "billing": [{**dataclasses.asdict(bill), "exact": bill.exact} for bill in billing],
        "log_problems": problems,
        "failures": failures,
        "tracing": spans,
    }
    output.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    print("\n" + report.markdown(results, billing))
    if problems:
        print("\nWarnings and errors in the process logs:")
        for name, lines in problems.items():
            print(f"  {name}:")
            print("\n".join(f"    {line}" for line in lines))
    for name, reason in failures.items():
        print(f"\n{name} FAILED: {reason}")
    print(f"\nresults: {output}\nlogs: {logs}\nwall time: {document['wall_s']}s")
    failed = failures or any(result.errors for result in results) or not all(bill.exact for bill in billing)
    return 1 if failed else 0


def git_state() -> dict[str, object]:
    """The commit measured, and whether the work tree differed from it."""
    state: dict[str, object] = {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=False, cwd=Path(__file__).parent)
        changes = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                 text=True, timeout=10, check=False, cwd=Path(__file__).parent)
    except (OSError, subprocess.TimeoutExpired):
        return state
    state["commit"] = commit.stdout.strip() or None
    state["dirty"] = bool(changes.stdout.strip()) if changes.returncode == 0 else None
    return state


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Behave as Ctrl-C does: inside an event loop that cancels the running
    # benchmark cleanly, outside one it raises KeyboardInterrupt.
    signal.raise_signal(signal.SIGINT)


def run_to_the_end(run: Callable[[argparse.Namespace], int], arguments: argparse.Namespace) -> NoReturn:
    """Exit with ``run(arguments)``'s status. SIGTERM unwinds like Ctrl-C,
    so the run's cleanup happens either way."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        sys.exit(run(arguments))
    except KeyboardInterrupt:
        print("\ninterrupted; the processes, database and queues the run made were removed", file=sys.stderr)
        sys.exit(130)


def main(argv: list[str] | None = None) -> None:
    run_to_the_end(run, parse_arguments(argv))


if __name__ == "__main__":
    main()
