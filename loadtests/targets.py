"""Starting and stopping what the benchmark measures, as real processes.

Every target is built from the gateway's public surface only: the
``gatewayz`` CLI (``serve``, ``ingress``, ``worker``, ``billing``,
``orchestrator``, ``migrate``, ``keys create``) and its HTTP API. Each start function is a
context manager that undoes everything it did (processes, the PostgreSQL
database, the RabbitMQ queues of its namespace) however the ``with`` block
ends, Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import psutil

from loadtests.load import Target

MODEL = "fake-small"
PROVIDER = "fake"
# Credits per million tokens, so also micro-credits per token.
INPUT_PRICE = 1
OUTPUT_PRICE = 2
STOP_GRACE = 15.0
READY_TIMEOUT = 60.0
CLI_TIMEOUT = 120.0
PRIORITY_CLASSES = ("realtime", "standard", "bulk")


@dataclass(frozen=True)
class Running:
    """A started target and its processes (name -> pid), for CPU accounting."""

    target: Target
    pids: dict[str, int]
    environ: Mapping[str, str] = field(default_factory=dict)  # the roles' settings, for more `gatewayz` commands


@dataclass(frozen=True)
class Upstream:
    port: int
    pid: int


@dataclass(frozen=True)
class GatewayOptions:
    """How the benchmark runs the gateway."""

    credits: int  # of the benchmark's API key
    worker_concurrency: int  # jobs a pool runs at once: each distributed worker's, the embedded pool's --concurrency
    settings: Mapping[str, str] = field(default_factory=dict)  # extra GATEWAYZ_ (and OTEL_) variables, every role
    ingress_workers: int = 1  # `gatewayz ingress --workers`: processes on the ingress port
    worker_processes: int = 1  # `gatewayz worker` processes for the provider
    orchestrator: bool = False  # run `gatewayz orchestrator` too (batches), distributed


@dataclass(frozen=True)
class Services:
    """The real services a distributed gateway runs on."""

    broker_url: str
    redis_url: str
    postgres_dsn: str  # an admin connection, used to create and drop the run's database


def raise_fd_limit() -> int:
    """Let this process, and so every process it starts, open as many files
    (sockets) as the system allows it: thousands of open streams need one
    each in the load generator, the gateway and the upstream. The new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gatewayz_command() -> list[str]:
    """The installed ``gatewayz`` script beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "gatewayz"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("gatewayz")
    if found is None:
        raise RuntimeError("the `gatewayz` command is not installed (pip install -e .)")
    return [found]


def clean_environ(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any ``GATEWAYZ_`` setting, plus ``extra``:
    a target must run on exactly the settings the benchmark chose."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAYZ_")}
    return {**inherited, "GATEWAYZ_LOG_LEVEL": "warning", **extra}


def gateway_config(path: Path, upstream_port: int) -> Path:
    path.write_text(
        f'[providers.{PROVIDER}]\n'
        f'adapter = "openai"\n'
        f'base_url = "http://127.0.0.1:{upstream_port}/v1"\n'
        f'models = ["{MODEL}"]\n\n'
        f'[models."{MODEL}"]\n'
        f'providers = ["{PROVIDER}"]\n'
        f"input_price_per_mtok = {INPUT_PRICE}.0\n"
        f"output_price_per_mtok = {OUTPUT_PRICE}.0\n"
        # One plan per priority class, for keys that run at it (loadtests/priority.py).
        + "".join(f'\n[plans.{name}]\npriority = "{name}"\n' for name in PRIORITY_CLASSES)
    )
    return path


def cost_micros(input_tokens: int, output_tokens: int) -> int:
    """What one request should cost at the configured prices, in micro-credits."""
    return input_tokens * INPUT_PRICE + output_tokens * OUTPUT_PRICE


def run_cli(args: list[str], env: Mapping[str, str], log: Path) -> str:
    """Run one ``gatewayz`` command to completion; its output, or an error with it."""
    completed = subprocess.run(
        [*gatewayz_command(), *args], env=dict(env), capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
    )
    with log.open("a") as output:
        output.write(f"$ gatewayz {' '.join(args)}\n{completed.stdout}{completed.stderr}\n")
    if completed.returncode != 0:
        raise RuntimeError(f"`gatewayz {' '.join(args)}` failed ({completed.returncode}):\n{completed.stderr[-2000:]}")
    return completed.stdout


def create_key(env: Mapping[str, str], log: Path, credits: int, plan: str | None = None) -> str:
    plan_option = ["--plan", plan] if plan is not None else []
    output = run_cli(["keys", "create", "--name", "bench", "--credits", str(credits), *plan_option], env, log)
    return output.strip().splitlines()[-1].strip()


@contextmanager
def background(name: str, command: list[str], env: Mapping[str, str], logs: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running process with its output in ``logs/<name>.log``; stopped
    with SIGTERM (then SIGKILL after a grace period) when the block ends.

    It runs in its own session so a Ctrl-C reaches only the benchmark, which
    then stops it in order."""
    with (logs / f"{name}.log").open("ab") as output:
        process = subprocess.Popen(
            command, env=dict(env), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_healthy(url: str, processes: list[subprocess.Popen[bytes]], logs: Path, path: str = "/health",
                 timeout: float = READY_TIMEOUT) -> None:
    """Poll ``GET url+path`` until it answers 200; fail early if a process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited with {process.returncode}; see {logs}")
        try:
            if httpx.get(url + path, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url}{path} did not answer 200 within {timeout:g}s; see {logs}")


def wait_listening(process: subprocess.Popen[bytes], port: int, count: int, logs: Path) -> None:
    """Wait until ``count`` children of ``process`` listen on ``port``."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}; see {logs}")
        listening = 0
        for child in psutil.Process(process.pid).children():
            try:
                listening += any(connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
                                 for connection in child.net_connections("tcp"))
            except psutil.Error:
                continue  # a child that just ended
        if listening >= count:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{count} processes did not listen on port {port} within {READY_TIMEOUT:g}s; see {logs}")


@contextmanager
def fake_upstream(logs: Path) -> Iterator[Upstream]:
    """``python -m loadtests.fake_upstream`` on a free port."""
    port = free_port()
    command = [sys.executable, "-m", "loadtests.fake_upstream", "--port", str(port)]
    with background("fake_upstream", command, clean_environ({}), logs) as process:
        wait_healthy(f"http://127.0.0.1:{port}", [process], logs, path="/v1/models")
        yield Upstream(port, process.pid)


@contextmanager
def otlp_sink(logs: Path) -> Iterator[Upstream]:
    """``python -m loadtests.otlp_sink`` on a free port: where a tracing
    run's gateway exports its spans (``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
    port = free_port()
    command = [sys.executable, "-m", "loadtests.otlp_sink", "--port", str(port)]
    with background("otlp_sink", command, clean_environ({}), logs) as process:
        wait_healthy(f"http://127.0.0.1:{port}", [process], logs, path="/stats")
        yield Upstream(port, process.pid)


def sink_stats(sink: Upstream | None) -> dict[str, int]:
    """What the OTLP sink received so far: exports, spans and bytes (all 0 with no sink)."""
    if sink is None:
        return {"exports": 0, "spans": 0, "bytes": 0}
    stats: dict[str, int] = httpx.get(f"http://127.0.0.1:{sink.port}/stats", timeout=10).json()
    return stats


def tracing_environ(tracing: bool, sink: Upstream | None) -> dict[str, str]:
    """The OTEL_* variables of a run with tracing on (exporting everything
    to ``sink``) or off (whatever the benchmark's own environment says)."""
    if not tracing:
        return {"OTEL_TRACES_EXPORTER": "none"}
    if sink is None:
        raise ValueError("a tracing run needs the OTLP sink")
    return {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on"}


@contextmanager
def direct(upstream_port: int) -> Iterator[Running]:
    """The fake upstream itself, without a gateway in front."""
    yield Running(Target("direct", f"http://127.0.0.1:{upstream_port}", MODEL, billed=False), {})


Launcher = Callable[[str, list[str]], list[str]]


@contextmanager
def embedded(upstream_port: int, workdir: Path, logs: Path, options: GatewayOptions, *,
             launcher: Launcher | None = None) -> Iterator[Running]:
    """``gatewayz serve`` on a fresh data directory (SQLite, in-process queues);
    ``launcher`` as for ``distributed``."""
    data_dir = workdir / "embedded-data"
    config = gateway_config(workdir / "gateway.toml", upstream_port)
    env = clean_environ({
        **options.settings,
        "GATEWAYZ_DATA_DIR": str(data_dir),
        "GATEWAYZ_DEV_CREDITS": str(options.credits),
    })
    key = create_key(env, logs / "embedded-cli.log", options.credits)  # migrates the fresh SQLite file itself
    port = free_port()
    argv = ["serve", "--port", str(port), "--config", str(config), "--concurrency", str(options.worker_concurrency)]
    command = launcher("serve", argv) if launcher else [*gatewayz_command(), *argv]
    with background("embedded-serve", command, env, logs) as process:
        wait_healthy(f"http://127.0.0.1:{port}", [process], logs)
        yield Running(Target("embedded", f"http://127.0.0.1:{port}", MODEL, key), {"serve": process.pid})


@contextmanager
def distributed(
    upstream_port: int, workdir: Path, logs: Path, options: GatewayOptions, services: Services, *,
    role_environ: Callable[[str, dict[str, str]], dict[str, str]] | None = None,
    launcher: Launcher | None = None,
) -> Iterator[Running]:
    """``gatewayz ingress`` (``--workers`` as ``options.ingress_workers``),
    ``options.worker_processes`` of ``gatewayz worker`` and ``billing`` as
    separate processes on RabbitMQ, Redis and a fresh PostgreSQL database, in
    a namespace of their own. The pids are named by role (``worker-2`` for
    the second of several workers).

    ``role_environ(role, environ)`` gives one role's environment from the
    shared one (e.g. its own service URLs); ``launcher(role, argv)`` the
    command that runs ``gatewayz argv`` as that role (e.g. under a profiler)."""
    suffix = secrets.token_hex(5)
    namespace = f"gzbench{suffix}"
    database = f"gatewayz_bench_{suffix}"
    config = gateway_config(workdir / "gateway.toml", upstream_port)
    env = clean_environ({
        **options.settings,
        "GATEWAYZ_BROKER_URL": services.broker_url,
        "GATEWAYZ_REDIS_URL": services.redis_url,
        "GATEWAYZ_DATABASE_URL": _database_url(services.postgres_dsn, database),
        "GATEWAYZ_NAMESPACE": namespace,
        "GATEWAYZ_KEY_SECRET": secrets.token_hex(32),
        "GATEWAYZ_CONFIG": str(config),
    })
    cli_log = logs / "distributed-cli.log"
    with ExitStack() as stack:
        try:
            asyncio.run(_postgres(services.postgres_dsn, f'CREATE DATABASE "{database}"'))
        except (OSError, asyncpg.PostgresError) as error:
            raise RuntimeError(f"cannot create the database {database!r}: {error}") from error
        drop = f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'
        stack.callback(_undo, f"drop the database {database!r}", lambda: _postgres(services.postgres_dsn, drop))
        stack.callback(_undo, f"delete the broker namespace {namespace!r}",
                       lambda: _delete_namespace(services.broker_url, namespace))
        run_cli(["migrate"], env, cli_log)
        key = create_key(env, cli_log, options.credits)
        port = free_port()
        worker = ["worker", "--provider", PROVIDER, "--concurrency", str(options.worker_concurrency)]
        workers = ({"worker": worker} if options.worker_processes == 1 else
                   {f"worker-{number}": worker for number in range(1, options.worker_processes + 1)})
        roles = {"billing": ["billing"], **workers,
                 **({"orchestrator": ["orchestrator"]} if options.orchestrator else {}),
                 "ingress": ["ingress", "--port", str(port), "--workers", str(options.ingress_workers)]}
        launch = launcher or (lambda role, argv: [*gatewayz_command(), *argv])
        environ = role_environ or (lambda role, shared: shared)
        processes = {name: stack.enter_context(background(f"distributed-{name}", launch(name.partition("-")[0], argv),
                                                          environ(name.partition("-")[0], dict(env)), logs))
                     for name, argv in roles.items()}
        wait_healthy(f"http://127.0.0.1:{port}", list(processes.values()), logs)
        if options.ingress_workers > 1:
            # Until every process listens, the kernel gives them all the connections the benchmark opens first.
            wait_listening(processes["ingress"], port, options.ingress_workers, logs)
        target = Target("distributed", f"http://127.0.0.1:{port}", MODEL, key)
        yield Running(target, {name: process.pid for name, process in processes.items()}, env)


def _undo(what: str, cleanup: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run one clean-up step; a failure is reported, not raised, so that it
    neither hides the error that ended the run nor stops the other steps."""
    try:
        asyncio.run(cleanup())
    except Exception as error:  # the services' errors are many; each only means "left behind"
        print(f"warning: could not {what}: {error!r}", file=sys.stderr)


def _database_url(admin_dsn: str, database: str) -> str:
    base = admin_dsn.rsplit("/", 1)[0]
    return base.replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{database}"


async def _postgres(dsn: str, statement: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _delete_namespace(broker_url: str, namespace: str) -> None:
    """Delete the queues and exchanges the run's namespace left on the broker.

    The broker has no "list by prefix" over AMQP, so the names follow the
    gateway's documented topology: ``<ns>.jobs`` (exchange) routing to
    ``<ns>.jobs.<provider>`` and ``<ns>.jobs.<provider>.low``, ``<ns>.dead`` to ``<ns>.dead-letters`` (and
    ``<ns>.dead-letters.parked``), and ``<ns>.usage``. Deleting a name that does not exist is not an error."""
    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel()
        for queue in (f"{namespace}.jobs.{PROVIDER}", f"{namespace}.jobs.{PROVIDER}.low", f"{namespace}.jobs.mock",
                      f"{namespace}.jobs.mock.low", f"{namespace}.dead-letters", f"{namespace}.dead-letters.parked",
                      f"{namespace}.usage"):
            await channel.queue_delete(queue)
        for exchange in (f"{namespace}.jobs", f"{namespace}.dead"):
            await channel.exchange_delete(exchange)
