"""Two fake upstreams that fail on command one at a time (``fail:500@primary``),
a provider address where nothing listens, and gateway configs that give one
model several candidates, for the failover and circuit-breaker tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import openai

from loadtests.fake_upstream import FakeUpstream
from schema.catalog import GatewayConfig, parse_config
from tests.support.gateway import Gateway
from tests.support.processes import free_port
from tests.support.servers import ServerThread, serving

PRICES = {"input_price_per_mtok": Decimal("1.00"), "output_price_per_mtok": Decimal("2.00")}


@dataclass
class Upstreams:
    primary: FakeUpstream
    backup: FakeUpstream
    primary_url: str
    backup_url: str
    nowhere_url: str  # nothing listens there: connection refused

    def seen(self) -> tuple[int, int]:
        """How many requests each upstream has received so far."""
        return len(self.primary.requests), len(self.backup.requests)


@contextmanager
def two_upstreams() -> Iterator[Upstreams]:
    primary, backup = FakeUpstream(name="primary"), FakeUpstream(name="backup")
    with ExitStack() as stack:
        primary_server = stack.enter_context(ServerThread(primary.app, name="primary upstream"))
        backup_server = stack.enter_context(ServerThread(backup.app, name="backup upstream"))
        yield Upstreams(primary, backup, primary_server.url, backup_server.url, f"http://127.0.0.1:{free_port()}")


@contextmanager
def named_upstream(name: str) -> Iterator[FakeUpstream]:
    """One fake upstream that obeys the commands addressed to ``name``, at its ``url``."""
    with serving(FakeUpstream(name=name), f"{name} upstream") as fake:
        yield fake


def echoed(gateway: Gateway, key: str, message: str, *, model: str, stream: bool = False) -> httpx.Headers:
    """Ask ``model`` through the openai SDK; the answer must be the fake's
    echo of ``message``. Returns the response's headers."""
    sdk = openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=30)
    raw = sdk.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": message}], stream=stream)
    if stream:
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == f"Echo: {message}"
    else:
        assert raw.parse().choices[0].message.content == f"Echo: {message}"
    return raw.headers


def resilience_config(upstreams: Upstreams, **primary: Any) -> GatewayConfig:
    """``duo``: primary then backup; ``solo``: primary only; ``far``: an
    unreachable provider, then backup. ``primary`` sets the primary
    provider's fields (its timeouts)."""
    document = {
        "providers": {
            "primary": {"adapter": "openai", "base_url": f"{upstreams.primary_url}/v1", **primary},
            "backup": {"adapter": "openai", "base_url": f"{upstreams.backup_url}/v1"},
            "nowhere": {"adapter": "openai", "base_url": f"{upstreams.nowhere_url}/v1", "connect_timeout": 2},
        },
        "models": {
            "duo": {"providers": ["primary", "backup"], **PRICES},
            "solo": {"providers": ["primary"], **PRICES},
            "far": {"providers": ["nowhere", "backup"], **PRICES},
        },
    }
    return parse_config(document, {})


def cost_of_echo(message: str) -> int:
    """Micro-credits of the fake's echo of one user message at 1.00/2.00
    credits per million tokens: a token per word, the reply is "Echo:" + it."""
    words = len(message.split())
    return words * 1 + (words + 1) * 2


def usage_rows(gateway: Gateway, key: str, timeout: float = 10.0, expected: int = 1) -> list[dict[str, Any]]:
    """The key's settled requests, once ``expected`` of them are there."""
    deadline = time.monotonic() + timeout
    while True:
        rows = httpx.get(f"{gateway.url}/user/usage", headers={"authorization": f"Bearer {key}"}).json()["data"]
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)
