"""A closed-loop load generator for ``/v1/chat/completions`` over httpx.

``measure`` keeps ``concurrency`` requests in flight until ``requests`` have
been started or ``duration`` seconds have passed, whichever comes first, and
summarises what the client saw: throughput, latency percentiles and, for
streams, time to the first content token. It only speaks the public HTTP API,
so the same code measures the fake upstream directly and the gateway in front
of it.

Each simulated user has a client of its own, holding one keep-alive
connection, as separate applications would. One ``httpx.AsyncClient`` shared
by 64 concurrent users is itself the bottleneck (encode/httpx#3215: on this
machine about 250 JSON requests/s with multi-second tails, against over 1,000
with a client per user), and would be measured instead of the target.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

CHAT_PATH = "/v1/chat/completions"
REQUEST_TIMEOUT = 30.0
# Below uvicorn's 5 s, so the client drops an idle connection before the
# server does, never racing a request against the server's close.
KEEPALIVE_EXPIRY = 2.0


@dataclass(frozen=True)
class Target:
    """Where to send chat completions: ``{origin}/v1/chat/completions``."""

    name: str
    origin: str
    model: str
    api_key: str | None = None
    billed: bool = True  # a gateway that keeps balances (``GET /user/balance``) for its keys

    def client(self) -> httpx.AsyncClient:
        """A client for one simulated user: one connection, kept alive."""
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return httpx.AsyncClient(
            base_url=self.origin,
            headers=headers,
            timeout=httpx.Timeout(REQUEST_TIMEOUT),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=KEEPALIVE_EXPIRY),
        )


@dataclass
class Sample:
    """One request as the client saw it; ``error`` is None when it succeeded."""

    latency: float
    ttft: float | None = None
    error: str | None = None


@dataclass
class LevelResult:
    """The summary of one (target, streaming, concurrency) cell, times in ms."""

    target: str
    stream: bool
    concurrency: int
    started: int
    ok: int
    elapsed_s: float
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    errors: dict[str, int] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per process, filled in by the caller
    upstream: str = "instant"  # how the fake upstream paced its answers, set by the caller


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between the closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def chat_body(model: str, prompt: str, stream: bool) -> bytes:
    return orjson.dumps({"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]})


async def _complete(client: httpx.AsyncClient, body: bytes) -> Sample:
    start = time.perf_counter()
    response = await client.post(CHAT_PATH, content=body)
    latency = time.perf_counter() - start
    if response.status_code != 200:
        return Sample(latency, error=f"HTTP {response.status_code}")
    try:
        content = orjson.loads(response.content)["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return Sample(latency, error="malformed body")
    return Sample(latency, error=None if content else "empty answer")


async def _stream(client: httpx.AsyncClient, body: bytes) -> Sample:
    start = time.perf_counter()
    ttft: float | None = None
    async with client.stream("POST", CHAT_PATH, content=body) as response:
        if response.status_code != 200:
            await response.aread()
            return Sample(time.perf_counter() - start, error=f"HTTP {response.status_code}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                latency = time.perf_counter() - start
                return Sample(latency, ttft, error=None if ttft is not None else "no content")
            if ttft is not None and '"error":' not in data:
                continue  # only the first token and a possible error event matter
            try:
                chunk: Any = orjson.loads(data)
            except orjson.JSONDecodeError:
                return Sample(time.perf_counter() - start, ttft, error="malformed event")
            if isinstance(chunk, dict) and "error" in chunk:
                return Sample(time.perf_counter() - start, ttft, error="error event")
            if any((choice.get("delta") or {}).get("content") for choice in chunk.get("choices") or ()):
                ttft = time.perf_counter() - start
    return Sample(time.perf_counter() - start, ttft, error="no [DONE]")


async def send(client: httpx.AsyncClient, body: bytes, stream: bool) -> Sample:
    """One request; transport failures become a sample with an error."""
    start = time.perf_counter()
    try:
        return await (_stream(client, body) if stream else _complete(client, body))
    except httpx.HTTPError as error:
        return Sample(time.perf_counter() - start, error=type(error).__name__)


async def balance_micros(client: httpx.AsyncClient) -> int:
    """The caller's balance from ``GET /user/balance`` (gateway targets only)."""
    response = await client.get("/user/balance")
    response.raise_for_status()
    return int(response.json()["balance_micros"])


async def measure(
    target: Target,
    clients: Sequence[httpx.AsyncClient],
    *,
    prompt: str,
    stream: bool,
    concurrency: int,
    requests: int,
    duration: float,
) -> LevelResult:
    """Run one level: at most ``requests`` requests, none started after
    ``duration``; user ``i`` sends through ``clients[i]``."""
    if len(clients) < concurrency:
        raise ValueError(f"{concurrency} users need as many clients, got {len(clients)}")
    body = chat_body(target.model, prompt, stream)
    samples: list[Sample] = []
    started = 0
    start = time.perf_counter()
    stop_starting = start + duration

    async def user(client: httpx.AsyncClient) -> None:
        nonlocal started
        while started < requests and time.perf_counter() < stop_starting:
            started += 1
            samples.append(await send(client, body, stream))

    await asyncio.gather(*(user(client) for client in clients[:concurrency]))
    elapsed = time.perf_counter() - start
    good = [sample for sample in samples if sample.error is None]
    latencies = [sample.latency * 1000 for sample in good]
    ttfts = [sample.ttft * 1000 for sample in good if sample.ttft is not None] if stream else []
    errors = Counter(sample.error for sample in samples if sample.error is not None)
    return LevelResult(
        target=target.name,
        stream=stream,
        concurrency=concurrency,
        started=started,
        ok=len(good),
        elapsed_s=round(elapsed, 3),
        requests_per_s=round(len(good) / elapsed, 1) if elapsed > 0 else 0.0,
        p50_ms=_round(percentile(latencies, 0.50)),
        p99_ms=_round(percentile(latencies, 0.99)),
        ttft_p50_ms=_round(percentile(ttfts, 0.50)),
        ttft_p99_ms=_round(percentile(ttfts, 0.99)),
        errors=dict(errors),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
