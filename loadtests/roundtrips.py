"""What one request costs the distributed gateway in round trips: Redis
commands, RabbitMQ methods and PostgreSQL statements, per role, counted
exactly rather than timed.

    python -m loadtests.roundtrips [--requests 200] [--concurrency 1] [--profile DIR]

It starts the distributed target (``ingress``, ``worker``, ``billing``; see
``loadtests.targets``) with each role reaching each service through a
counting proxy of its own on loopback, so every byte a role sends is
attributed to it. The proxies read the protocols on the way through: Redis
commands (RESP), AMQP method frames in both directions, PostgreSQL
frontend messages (each execute labelled with its statement). A *round
trip* is a client write that follows a reply on the same connection (a
pipeline counts once); pub/sub pushes and consumer deliveries are counted
as methods, not round trips.

After a warm-up (connections, declares, prepared statements, caches), it
measures the background (beats, sweeps, version checks) over an idle
window, then sends ``--requests`` JSON requests and as many streamed ones,
each phase followed by a quiet second for settlement, and prints each
counter per request, the background subtracted. Figures below 0.01 per
request are left out. ``--profile DIR`` also runs every role under
cProfile and writes ``DIR/<role>.prof`` (and the top functions to stdout);
CPU per request comes from each process's CPU time either way.
"""

from __future__ import annotations

import argparse
import asyncio
import pstats
import signal
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil

from loadtests import targets
from loadtests.load import chat_body, send

ROLES = ("ingress", "worker", "billing")
SERVICES = ("redis", "amqp", "postgres")
IDLE_WINDOW = 5.0
QUIET = 1.5  # after a phase: settlement and background unsubscribes land
WARMUP = 20


# The protocols, as far as counting needs them.

class RedisCommands:
    """Command names from a client's RESP stream (redis-py sends arrays)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        names = []
        while True:
            parsed = self._one()
            if parsed is None:
                return names
            names.append(parsed)

    def _one(self) -> str | None:
        buffer = self._buffer
        if not buffer.startswith(b"*"):
            return None
        end = buffer.find(b"\r\n")
        if end < 0:
            return None
        count, position, name = int(buffer[1:end]), end + 2, ""
        for index in range(count):
            end = buffer.find(b"\r\n", position)
            if end < 0:
                return None
            size = int(buffer[position + 1:end])
            if len(buffer) < end + 2 + size + 2:
                return None
            if index == 0:
                name = buffer[end + 2:end + 2 + size].decode().upper()
            position = end + 2 + size + 2
        self._buffer = buffer[position:]
        return name


AMQP_METHODS = {
    (10, 10): "connection.start", (10, 11): "connection.start-ok", (10, 30): "connection.tune",
    (10, 31): "connection.tune-ok", (10, 40): "connection.open", (10, 41): "connection.open-ok",
    (20, 10): "channel.open", (20, 11): "channel.open-ok", (20, 40): "channel.close", (20, 41): "channel.close-ok",
    (40, 10): "exchange.declare", (40, 11): "exchange.declare-ok", (50, 10): "queue.declare",
    (50, 11): "queue.declare-ok", (50, 20): "queue.bind", (50, 21): "queue.bind-ok", (60, 10): "basic.qos",
    (60, 11): "basic.qos-ok", (60, 20): "basic.consume", (60, 21): "basic.consume-ok", (60, 40): "basic.publish",
    (60, 60): "basic.deliver", (60, 80): "basic.ack", (60, 90): "basic.reject", (60, 120): "basic.nack",
    (85, 10): "confirm.select", (85, 11): "confirm.select-ok",
}


class AmqpMethods:
    """Method names from one direction of an AMQP 0-9-1 connection."""

    def __init__(self, *, client: bool) -> None:
        self._buffer = b""
        self._header = client  # the client starts with "AMQP\\0\\0\\9\\1"

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        if self._header:
            if len(self._buffer) < 8:
                return []
            self._buffer, self._header = self._buffer[8:], False
        names = []
        while len(self._buffer) >= 7:
            kind, _, size = struct.unpack(">BHI", self._buffer[:7])
            if len(self._buffer) < 7 + size + 1:
                break
            payload, self._buffer = self._buffer[7:7 + size], self._buffer[7 + size + 1:]
            if kind == 1:
                ids = struct.unpack(">HH", payload[:4])
                names.append(AMQP_METHODS.get(ids, f"method {ids}"))
            elif kind == 8:
                names.append("heartbeat")
        return names


class PostgresMessages:
    """Frontend messages of one PostgreSQL connection: each ``Execute``
    (extended protocol) or simple ``Query`` named by its SQL's first words."""

    def __init__(self) -> None:
        self._buffer = b""
        self._started = False
        self._statements: dict[bytes, str] = {}
        self._portal = ""

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        names = []
        while True:
            if not self._started:
                if len(self._buffer) < 8:
                    return names
                (size,) = struct.unpack(">I", self._buffer[:4])
                if len(self._buffer) < size:
                    return names
                code = struct.unpack(">I", self._buffer[4:8])[0]
                self._buffer = self._buffer[size:]
                self._started = code != 80877103  # an SSLRequest precedes the real startup
                continue
            if len(self._buffer) < 5:
                return names
            kind = chr(self._buffer[0])
            (size,) = struct.unpack(">I", self._buffer[1:5])
            if len(self._buffer) < 1 + size:
                return names
            body, self._buffer = self._buffer[5:1 + size], self._buffer[1 + size:]
            if kind == "P":
                name, _, rest = body.partition(b"\0")
                self._statements[name] = _sql(rest.partition(b"\0")[0])
            elif kind == "B":
                _, _, rest = body.partition(b"\0")
                self._portal = self._statements.get(rest.partition(b"\0")[0], "?")
            elif kind == "E":
                names.append(f"execute {self._portal}")
            elif kind == "Q":
                names.append("query " + _sql(body.rstrip(b"\0")))


def _sql(text: bytes) -> str:
    words = text.decode(errors="replace").replace("\n", " ").split()
    head = " ".join(words[:3])
    if words and words[0].upper() in ("UPDATE", "INSERT", "DELETE") or head.upper().startswith("SELECT"):
        table = next((words[i + 1] for i, word in enumerate(words[:-1])
                      if word.upper() in ("FROM", "INTO", "UPDATE")), "")
        return f"{words[0].upper()} {table}".strip()
    return head[:40]


# The counting proxies.

@dataclass
class Tally:
    round_trips: int = 0
    methods: Counter[str] = field(default_factory=Counter)


class Proxies:
    """One listening proxy per (role, service), on an event loop in a thread
    of its own (the targets' start-up blocks the main thread)."""

    def __init__(self, upstreams: dict[str, tuple[str, int]]) -> None:
        self._upstreams = upstreams
        self._lock = threading.Lock()
        self._tallies = {(role, service): Tally() for role in ROLES for service in SERVICES}
        self.ports: dict[tuple[str, str], int] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="proxies", daemon=True)

    def __enter__(self) -> Proxies:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _listen(self) -> None:
        for role in ROLES:
            for service in SERVICES:
                server = await asyncio.start_server(lambda r, w, k=(role, service): self._pipe(k, r, w),
                                                    "127.0.0.1", 0)
                self.ports[(role, service)] = server.sockets[0].getsockname()[1]

    async def _pipe(self, key: tuple[str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        service = key[1]
        host, port = self._upstreams[service]
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        turn = [True]  # the next client write is a new round trip
        client: Callable[[bytes], list[str]]
        server: Callable[[bytes], list[str]] | None = None
        if service == "redis":
            client = RedisCommands().feed
        elif service == "amqp":
            client = AmqpMethods(client=True).feed
            server = _prefixed("<- ", AmqpMethods(client=False).feed)
        else:
            client = PostgresMessages().feed

        async def forward(source: asyncio.StreamReader, sink: asyncio.StreamWriter, from_client: bool) -> None:
            parse = client if from_client else server
            try:
                while data := await source.read(65536):
                    names = parse(data) if parse is not None else []
                    with self._lock:
                        tally = self._tallies[key]
                        tally.methods.update(names)
                        if from_client and turn[0]:
                            tally.round_trips += 1
                        turn[0] = not from_client
                    sink.write(data)
                    await sink.drain()
            except (OSError, ValueError, struct.error):
                pass
            finally:
                sink.close()

        await asyncio.gather(forward(reader, up_writer, True), forward(up_reader, writer, False))

    def snapshot(self) -> dict[tuple[str, str], Tally]:
        with self._lock:
            return {key: Tally(tally.round_trips, Counter(tally.methods)) for key, tally in self._tallies.items()}

    def url(self, role: str, service: str, original: str) -> str:
        parts = urlsplit(original)
        netloc = parts.netloc.rpartition("@")
        host = f"127.0.0.1:{self.ports[(role, service)]}"
        return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if netloc[1] else host))


def _prefixed(prefix: str, parse: Callable[[bytes], list[str]]) -> Callable[[bytes], list[str]]:
    return lambda data: [prefix + name for name in parse(data)]


def _endpoint(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


# Measuring.

@dataclass
class Phase:
    name: str
    requests: int
    seconds: float
    counts: dict[tuple[str, str], Tally]
    cpu: dict[str, float]


def difference(after: dict[tuple[str, str], Tally],
               before: dict[tuple[str, str], Tally]) -> dict[tuple[str, str], Tally]:
    return {key: Tally(after[key].round_trips - before[key].round_trips, after[key].methods - before[key].methods)
            for key in after}


async def run_phase(name: str, origin: str, key: str, requests: int, concurrency: int, stream: bool,
                    proxies: Proxies, processes: dict[str, psutil.Process]) -> Phase:
    body = chat_body(targets.MODEL, "words:20", stream)
    before, cpu_before, started = proxies.snapshot(), _cpu(processes), time.monotonic()
    failures = 0
    if requests:
        left = iter(range(requests))

        async def user() -> None:
            nonlocal failures
            async with httpx.AsyncClient(base_url=origin, timeout=30,
                                         headers={"authorization": f"Bearer {key}"}) as client:
                for _ in left:
                    sample = await send(client, body, stream)
                    failures += sample.error is not None

        await asyncio.gather(*(user() for _ in range(concurrency)))
    await asyncio.sleep(QUIET if requests else IDLE_WINDOW)
    if failures:
        raise RuntimeError(f"{failures} of {requests} {name} requests failed")
    cpu_after = _cpu(processes)
    return Phase(name, requests, time.monotonic() - started, difference(proxies.snapshot(), before),
                 {role: cpu_after[role] - cpu_before[role] for role in processes})


def _cpu(processes: dict[str, psutil.Process]) -> dict[str, float]:
    return {role: sum(process.cpu_times()[:2]) for role, process in processes.items()}


def per_request(phase: Phase, idle: Phase) -> dict[tuple[str, str], tuple[float, dict[str, float]]]:
    """Each counter per request, less the background the idle window saw."""
    scale = phase.seconds / idle.seconds
    figures = {}
    for key, tally in phase.counts.items():
        quiet = idle.counts[key]
        trips = (tally.round_trips - quiet.round_trips * scale) / phase.requests
        methods = {name: (count - quiet.methods.get(name, 0) * scale) / phase.requests
                   for name, count in tally.methods.items()}
        figures[key] = (trips, {name: value for name, value in sorted(methods.items()) if value >= 0.01})
    return figures


def report(phases: list[Phase], idle: Phase) -> str:
    lines = [f"background (idle {idle.seconds:.1f}s), per second:"]
    for (role, service), tally in idle.counts.items():
        if tally.round_trips:
            methods = ", ".join(f"{name} {count / idle.seconds:.2f}" for name, count in sorted(tally.methods.items()))
            lines.append(f"  {role:8} {service:8} round trips {tally.round_trips / idle.seconds:.2f}  ({methods})")
    for phase in phases:
        lines += ["", f"## {phase.name}: {phase.requests} requests, per request",
                  "| role | service | round trips | what was sent (and, AMQP, received `<-`) |", "|---|---|---:|---|"]
        for (role, service), (trips, methods) in per_request(phase, idle).items():
            if trips >= 0.01 or methods:
                what = ", ".join(f"{name} {value:.2f}" for name, value in methods.items())
                lines.append(f"| {role} | {service} | {trips:.2f} | {what} |")
        cpu = ", ".join(f"{role} {seconds / phase.requests * 1000:.2f}" for role, seconds in phase.cpu.items())
        lines.append(f"\nCPU ms per request (background included): {cpu}")
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Count what one request costs each role of the distributed gateway.")
    parser.add_argument("--requests", type=int, default=200, help="requests per phase (default 200)")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight (default 1)")
    parser.add_argument("--profile", type=Path, default=None, help="run the roles under cProfile; .prof files here")
    parser.add_argument("--gateway-setting", dest="gateway_settings", action="append", default=[],
                        metavar="GATEWAYZ_NAME=VALUE", help="an extra setting for every role (repeatable)")
    parser.add_argument("--broker-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    arguments = parser.parse_args(argv)
    if arguments.requests < 1 or arguments.concurrency < 1:
        parser.error("--requests and --concurrency must be positive")
    return arguments


def profiled(directory: Path) -> Callable[[str, list[str]], list[str]]:
    """Run ``gatewayz argv`` with cProfile switched on by SIGUSR1 and off by
    SIGUSR2, which writes ``directory/<role>.prof``: the measured phases only,
    not the start-up."""
    def launch(role: str, argv: list[str]) -> list[str]:
        script = targets.gatewayz_command()[0]
        code = (
            "import cProfile, runpy, signal, sys, time\n"
            # As if the script ran: its own directory first, not the current one.
            f"sys.path[0] = {str(Path(script).parent)!r}\n"
            "profile = cProfile.Profile(time.process_time)  # CPU time: the machine is shared\n"
            "signal.signal(signal.SIGUSR1, lambda *_: profile.enable())\n"
            "def stop(*_):\n"
            "    profile.disable()\n"
            f"    profile.dump_stats({str(directory / role) + '.prof'!r})\n"
            "signal.signal(signal.SIGUSR2, stop)\n"
            f"sys.argv = [{script!r}, *{argv!r}]\n"
            f"runpy.run_path({script!r}, run_name='__main__')\n"
        )
        return [sys.executable, "-c", code]
    return launch


@contextmanager
def gateway(arguments: argparse.Namespace, proxies: Proxies, workdir: Path) -> Iterator[targets.Running]:
    """The distributed target, each role reaching each service through its own proxy."""
    logs = workdir / "logs"
    logs.mkdir()
    services = targets.Services(arguments.broker_url, arguments.redis_url, arguments.postgres_dsn)
    settings = dict(setting.split("=", 1) for setting in arguments.gateway_settings)
    options = targets.GatewayOptions(credits=1_000_000, worker_concurrency=64, settings=settings)

    def proxied(role: str, environ: dict[str, str]) -> dict[str, str]:
        return {**environ, **{name: proxies.url(role, service, environ[name]) for name, service in (
            ("GATEWAYZ_REDIS_URL", "redis"), ("GATEWAYZ_BROKER_URL", "amqp"), ("GATEWAYZ_DATABASE_URL", "postgres"))}}

    with targets.fake_upstream(logs) as upstream, targets.distributed(
            upstream.port, workdir, logs, options, services, role_environ=proxied,
            launcher=profiled(arguments.profile) if arguments.profile else None) as running:
        yield running


async def measure(arguments: argparse.Namespace, running: targets.Running, proxies: Proxies) -> list[Phase]:
    target = running.target
    assert target.api_key is not None
    processes = {role: psutil.Process(pid) for role, pid in running.pids.items()}
    await run_phase("warm-up", target.origin, target.api_key, WARMUP, 1, False, proxies, processes)
    await run_phase("warm-up", target.origin, target.api_key, WARMUP, 1, True, proxies, processes)
    idle = await run_phase("idle", target.origin, target.api_key, 0, 1, False, proxies, processes)
    phases = [idle]
    _signal(processes, signal.SIGUSR1 if arguments.profile else None)
    for stream in (False, True):
        phases.append(await run_phase("stream" if stream else "JSON", target.origin, target.api_key,
                                      arguments.requests, arguments.concurrency, stream, proxies, processes))
    _signal(processes, signal.SIGUSR2 if arguments.profile else None)
    await asyncio.sleep(1.0 if arguments.profile else 0)  # the profiles are written
    return phases


def _signal(processes: dict[str, psutil.Process], signum: signal.Signals | None) -> None:
    if signum is not None:
        for process in processes.values():
            process.send_signal(signum)


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    if arguments.profile:
        arguments.profile.mkdir(parents=True, exist_ok=True)
    upstreams = {"redis": _endpoint(arguments.redis_url, 6379), "amqp": _endpoint(arguments.broker_url, 5672),
                 "postgres": _endpoint(arguments.postgres_dsn, 5432)}
    with tempfile.TemporaryDirectory(prefix="gz-roundtrips-") as workdir, Proxies(upstreams) as proxies:
        with gateway(arguments, proxies, Path(workdir)) as running:
            idle, *phases = asyncio.run(measure(arguments, running, proxies))
        print(f"concurrency {arguments.concurrency}\n")
        print(report(phases, idle))
    if arguments.profile:
        for role in ROLES:
            path = arguments.profile / f"{role}.prof"
            if path.exists():
                print(f"\n## {role}: top functions by own time, over both phases")
                pstats.Stats(str(path)).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
