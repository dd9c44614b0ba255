"""When the rate limiter's Redis cannot be reached, the ingress keeps serving
with per-process limits, says so once in its log and in ``GET /health``,
and goes back to the shared limits when Redis answers again. The Redis
that goes away is the test's own, never the shared one on 6379."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as async_redis

from ingress.limiter import Limit
from ingress.limiter.redis import RedisLimiter
from loadtests.fake_upstream import FakeUpstream
from schema.catalog import GatewayConfig, parse_config
from tests.conftest import UPSTREAM_KEY
from tests.support.gateway import running_gateway
from tests.support.processes import free_port
from tests.support.redis_server import own_redis

REQUEST = {"model": "fake-output-priced", "max_tokens": 4, "messages": [{"role": "user", "content": "a b c"}]}


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "ingress.limiter.redis" and r.levelno == logging.WARNING and text in r.getMessage()]


async def test_an_unreachable_redis_gives_per_process_limits(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ingress.limiter.redis")
    nowhere = async_redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    limiter = RedisLimiter(nowhere, f"gztest{uuid.uuid4().hex[:10]}:ratelimit:", retry_interval=60)
    try:
        assert limiter.mode == "shared: redis"
        decisions = [await limiter.consume([Limit("key:1:requests", 5, 1)]) for _ in range(6)]
        assert [d.allowed for d in decisions] == [True] * 5 + [False], "the limits still hold, in this process"
        assert limiter.mode == "degraded: per-process"
        assert len(warnings_about(caplog, "unreachable")) == 1, "said once, not per request"
    finally:
        await limiter.aclose()


def fallback_config(upstream_url: str) -> GatewayConfig:
    return parse_config({
        "providers": {"fake": {"adapter": "openai", "base_url": f"{upstream_url}/v1", "api_key_env": "FAKE_KEY"}},
        "models": {"fake-output-priced": {"providers": ["fake"], "upstream_ids": {"fake": "fake-small"},
                                          "output_price_per_mtok": Decimal("2.00")}},
        "plans": {"tight": {"requests_per_minute": 5}},
        "rate_limits": {"default_plan": "tight"},
    }, {"FAKE_KEY": UPSTREAM_KEY})


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def test_redis_goes_away_and_comes_back(upstream: FakeUpstream, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ingress.limiter.redis")
    config = fallback_config(upstream.url)  # type: ignore[attr-defined]
    with own_redis() as server, running_gateway(config, tmp_path, rate_limit_redis_url=server.url) as gateway:
        key = gateway.create_key("1")

        def health() -> str:
            return httpx.get(f"{gateway.url}/health").json()["rate_limits"]

        def remaining() -> str | int:
            response = httpx.post(f"{gateway.base_url}/chat/completions", json=REQUEST,
                                  headers={"authorization": f"Bearer {key}"}, timeout=30)
            return response.headers["x-ratelimit-remaining-requests"] if response.status_code == 200 \
                else response.status_code

        def buckets() -> list[bytes]:
            with redis.Redis.from_url(server.url) as client:
                return client.keys("*ratelimit*")

        assert health() == "shared: redis"
        assert [remaining(), remaining()] == ["4", "3"]
        assert buckets(), "counted in Redis"

        server.stop()
        # Admission goes on, on this process's own buckets (which start full).
        assert [remaining() for _ in range(6)] == ["4", "3", "2", "1", "0", 429]
        assert health() == "degraded: per-process"
        assert len(warnings_about(caplog, "unreachable")) == 1

        server.start()  # an empty Redis on the same port
        wait_until(lambda: health() == "shared: redis", "the limiter sees Redis again")
        assert len(warnings_about(caplog, "reachable again")) == 1
        assert remaining() == "4", "counted in the (new, empty) Redis again"
        assert buckets()
