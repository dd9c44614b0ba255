"""What each candidate upstream HTTP client costs the process that drives it.

The gateway's workers spend a share of every request in their HTTP client
to the provider. This measures that share alone: each candidate client, in
its own process, drives the fake upstream (``loadtests.fake_upstream``)
closed-loop at each concurrency, JSON (``words:16``) then SSE (``words:64``,
every event parsed as the gateway parses it: its data through ``orjson``),
and reports requests per second and the client process's CPU seconds per
request (``time.process_time``). The upstream runs in a process of its own,
so at high concurrency requests per second may be its limit, not the
client's: CPU per request is the figure that compares clients.

Candidates (``--clients``, default all):

- ``httpx``: ``httpx.AsyncClient`` as the workers configured it before
  (pool of 1,000, SSE through ``aiter_lines``);
- ``httpx-bytes``: the same client, SSE through ``aiter_bytes`` and the
  gateway's byte decoder (``workers.adapters.sse``): the parser's share;
- ``httpx2``: pydantic's ``httpx2`` (what ``openai`` and ``anthropic``
  depend on), configured as ``httpx``;
- ``httpx-aiohttp``: ``httpx`` on the ``httpx-aiohttp`` transport;
- ``aiohttp``: one ``aiohttp.ClientSession`` with a tuned ``TCPConnector``;
- ``pyreqwest``: the Rust ``reqwest`` client behind Python bindings (its
  streamed body read as it comes, not after 64 KiB are buffered);
- ``gateway``: ``workers.adapters.http.ProviderHTTP`` as shipped (the one
  place this imports the gateway's code: it measures that client itself).

A candidate whose package is missing is reported and skipped
(``pip install aiohttp httpx-aiohttp pyreqwest``).

    python -m loadtests.clients
    python -m loadtests.clients --clients httpx,aiohttp --concurrency 1,64 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol

import orjson

from workers.adapters.sse import SSEDecoder

KEY = "bench-key"
CANDIDATES = ("httpx", "httpx-bytes", "httpx2", "httpx-aiohttp", "aiohttp", "pyreqwest", "gateway")
PATH = "/chat/completions"
JSON_BODY = orjson.dumps({"model": "fake-small", "max_tokens": 64,
                          "messages": [{"role": "user", "content": "words:16"}]})
SSE_BODY = orjson.dumps({"model": "fake-small", "max_tokens": 128, "stream": True,
                         "stream_options": {"include_usage": True},
                         "messages": [{"role": "user", "content": "words:64"}]})
SSE_EVENTS = 69  # the role chunk, "Echo:" and 64 words, the finish, the usage, [DONE]


class Candidate(Protocol):
    async def json(self) -> None: ...

    async def sse(self) -> int: ...

    async def aclose(self) -> None: ...


def _parsed(data: bytes | str) -> None:
    """What the gateway does with each event's data."""
    if data != b"[DONE]" and data != "[DONE]":
        orjson.loads(data)


def _answer(content: bytes) -> None:
    if "choices" not in orjson.loads(content):
        raise AssertionError("not a completion")


class HttpxClient:
    """``httpx`` (or ``httpx2``) as ``ProviderHTTP`` configured it, optionally on another transport."""

    def __init__(self, url: str, module: Any, *, lines: bool = True, transport: Any = None) -> None:
        self.module, self.lines = module, lines
        self.client = module.AsyncClient(
            base_url=url, headers={"content-type": "application/json", "authorization": f"Bearer {KEY}"},
            timeout=module.Timeout(600, connect=10), transport=transport,
            limits=module.Limits(max_connections=1000, max_keepalive_connections=200))

    async def json(self) -> None:
        response = await self.client.post(PATH, content=JSON_BODY)
        response.raise_for_status()
        _answer(response.content)

    async def sse(self) -> int:
        count = 0
        async with self.client.stream("POST", PATH, content=SSE_BODY) as response:
            response.raise_for_status()
            if self.lines:  # as ProviderHTTP.events read them before
                data: list[str] = []
                async for line in response.aiter_lines():
                    if line:
                        field, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if field == "data":
                            data.append(value)
                        continue
                    if data:
                        _parsed("\n".join(data))
                        count += 1
                    data = []
            else:
                decoder = SSEDecoder()
                async for chunk in response.aiter_bytes():
                    for _, event in decoder.feed(chunk):
                        _parsed(event)
                        count += 1
        return count

    async def aclose(self) -> None:
        await self.client.aclose()


class AiohttpClient:
    def __init__(self, url: str) -> None:
        import aiohttp

        self.url = url + PATH
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=4.0, ttl_dns_cache=60),
            headers={"content-type": "application/json", "authorization": f"Bearer {KEY}"},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=600),
            auto_decompress=False, skip_auto_headers=("accept-encoding",))

    async def json(self) -> None:
        async with self.session.post(self.url, data=JSON_BODY) as response:
            content = await response.read()
            if response.status >= 400:
                raise AssertionError(response.status)
        _answer(content)

    async def sse(self) -> int:
        count = 0
        async with self.session.post(self.url, data=SSE_BODY) as response:
            if response.status >= 400:
                raise AssertionError(response.status)
            decoder = SSEDecoder()
            async for chunk in response.content.iter_any():
                for _, event in decoder.feed(chunk):
                    _parsed(event)
                    count += 1
        return count

    async def aclose(self) -> None:
        await self.session.close()


class PyreqwestClient:
    def __init__(self, url: str) -> None:
        from pyreqwest.client import ClientBuilder

        self.url = url + PATH
        self.client = (ClientBuilder().max_connections(1000).connect_timeout(timedelta(seconds=10))
                       .read_timeout(timedelta(seconds=600))
                       .default_headers({"content-type": "application/json", "authorization": f"Bearer {KEY}"})
                       .build())

    async def json(self) -> None:
        response = await self.client.post(self.url).body_bytes(JSON_BODY).build().send()
        content = await response.bytes()
        if response.status >= 400:
            raise AssertionError(response.status)
        _answer(bytes(content))

    async def sse(self) -> int:
        count = 0
        # By default the response comes only once 64 KiB of its body are
        # buffered: a stream must come token by token.
        request = self.client.post(self.url).body_bytes(SSE_BODY).streamed_read_buffer_limit(1)
        async with request.build_streamed() as response:
            if response.status >= 400:
                raise AssertionError(response.status)
            decoder, reader = SSEDecoder(), response.body_reader
            while (chunk := await reader.read_chunk()) is not None:
                for _, event in decoder.feed(bytes(chunk)):
                    _parsed(event)
                    count += 1
        return count

    async def aclose(self) -> None:
        await self.client.close()


class GatewayClient:
    def __init__(self, url: str) -> None:
        from pydantic import SecretStr

        from schema.catalog import ProviderSpec
        from workers.adapters.http import ProviderHTTP

        spec = ProviderSpec(name="fake", adapter="openai", base_url=url, api_key=SecretStr(KEY))
        self.http = ProviderHTTP(spec, connect_timeout=10)
        self.body = orjson.loads(JSON_BODY)
        self.stream_body = orjson.loads(SSE_BODY)

    async def json(self) -> None:
        if "choices" not in await self.http.post_json(PATH, self.body):
            raise AssertionError("not a completion")

    async def sse(self) -> int:
        return sum([1 async for _ in self.http.events(PATH, self.stream_body)])

    async def aclose(self) -> None:
        await self.http.aclose()


def build(name: str, url: str) -> Candidate:
    if name in ("httpx", "httpx-bytes"):
        import httpx

        return HttpxClient(url, httpx, lines=name == "httpx")
    if name == "httpx2":
        import httpx2

        return HttpxClient(url, httpx2)
    if name == "httpx-aiohttp":
        import aiohttp
        import httpx
        from httpx_aiohttp import AiohttpTransport

        def session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=4.0),
                                         timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=600))

        return HttpxClient(url, httpx, lines=False, transport=AiohttpTransport(client=session))
    if name == "aiohttp":
        return AiohttpClient(url)
    if name == "pyreqwest":
        return PyreqwestClient(url)
    if name == "gateway":
        return GatewayClient(url)
    raise SystemExit(f"unknown client {name!r}; one of {', '.join(CANDIDATES)}")


def _cpu_of(pid: int) -> float:
    """CPU seconds ``pid`` has spent (user and system), from ``/proc``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _level(call: Callable[[], Awaitable[Any]], concurrency: int, duration: float,
                 upstream: int) -> dict[str, float]:
    """``concurrency`` loops calling ``call`` for ``duration`` seconds."""
    stop = time.perf_counter() + duration
    done = 0

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await call()
            done += 1

    await asyncio.gather(*(loop() for _ in range(concurrency)))  # warm: open the connections
    stop = time.perf_counter() + duration
    done = 0
    started, cpu, served = time.perf_counter(), time.process_time(), _cpu_of(upstream)
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed, spent, served = time.perf_counter() - started, time.process_time() - cpu, _cpu_of(upstream) - served
    return {"requests": done, "rps": done / elapsed, "cpu_ms": 1000 * spent / max(done, 1),
            "upstream_load": served / elapsed}


async def _measure(name: str, url: str, levels: list[int], duration: float, upstream: int) -> None:
    client = build(name, url)

    async def sse() -> None:
        if (events := await client.sse()) != SSE_EVENTS:
            raise AssertionError(f"{name}: {events} events, expected {SSE_EVENTS}")

    try:
        for kind, call in (("json", client.json), ("sse", sse)):
            for concurrency in levels:
                figures = await _level(call, concurrency, duration, upstream)
                print(json.dumps({"client": name, "kind": kind, "c": concurrency, **figures}), flush=True)
    finally:
        await client.aclose()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_listening(port: int, upstream: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if upstream.poll() is not None:
            raise SystemExit("the fake upstream did not start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the fake upstream did not listen within 20 s")


def _table(rows: list[dict[str, Any]], levels: list[int]) -> str:
    header = "| client | " + " | ".join(f"{kind} c={c}: req/s / CPU ms a req (upstream busy)"
                                        for kind in ("json", "sse") for c in levels)
    lines = [header + " |", "|---|" + "--:|" * (2 * len(levels))]
    for name in dict.fromkeys(row["client"] for row in rows):
        cells = []
        for kind in ("json", "sse"):
            for c in levels:
                row = next((r for r in rows if (r["client"], r["kind"], r["c"]) == (name, kind, c)), None)
                cells.append(f"{row['rps']:,.0f} / {row['cpu_ms']:.2f} ({row['upstream_load']:.0%})" if row else "n/a")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default=",".join(CANDIDATES))
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per level, after as long a warm-up")
    parser.add_argument("--rounds", type=int, default=1, help="run every client this many times, alternated")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--upstream-pid", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    levels = [int(c) for c in arguments.concurrency.split(",")]
    if arguments.child:
        run = __import__("uvloop").run if arguments.loop == "uvloop" else asyncio.run
        run(_measure(arguments.child, arguments.url, levels, arguments.duration, arguments.upstream_pid))
        return

    port = _free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "loadtests.fake_upstream", "--port", str(port)])
    rows: list[dict[str, Any]] = []
    try:
        _wait_listening(port, upstream)
        url = f"http://127.0.0.1:{port}/v1"
        for _ in range(arguments.rounds):
            for name in arguments.clients.split(","):
                child = subprocess.run(
                    [sys.executable, "-m", "loadtests.clients", "--child", name, "--url", url,
                     "--concurrency", arguments.concurrency, "--duration", str(arguments.duration),
                     "--loop", arguments.loop, "--upstream-pid", str(upstream.pid)],
                    check=False, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
                if child.returncode:
                    print(f"{name}: failed\n{child.stderr.strip()[-2000:]}", file=sys.stderr)
                for line in child.stdout.splitlines():
                    rows.append(json.loads(line))
                    print(line, file=sys.stderr)
    finally:
        upstream.terminate()
        upstream.wait(15)
    best: dict[tuple[str, str, int], dict[str, Any]] = {}
    for row in rows:  # over rounds, each client's best level: the least disturbed by the rest of the machine
        key = (row["client"], row["kind"], row["c"])
        if key not in best or row["cpu_ms"] < best[key]["cpu_ms"]:
            best[key] = row
    print(f"load average before the run ended: {os.getloadavg()[0]:.2f}")
    print(_table(list(best.values()), levels))


if __name__ == "__main__":
    main()
