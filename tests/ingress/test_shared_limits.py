"""Two ``gatewayz ingress`` processes on the real services share one key's
limit: a burst spread over both admits exactly the plan's requests per
minute, not that many per process."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx

from loadtests.fake_upstream import FakeUpstream
from tests.conftest import UPSTREAM_KEY
from tests.support.processes import background, free_port, gatewayz, wait_until_healthy
from tests.support.services import distributed_services

PLAN_RPM = 7


def test_two_ingress_processes_share_a_keys_limit(tmp_path: Path, upstream: FakeUpstream) -> None:
    config = tmp_path / "gatewayz.toml"
    config.write_text(
        f'[providers.fake]\nadapter = "openai"\nbase_url = "{upstream.url}/v1"\napi_key_env = "FAKE_KEY"\n\n'  # type: ignore[attr-defined]
        '[models."fake-small"]\nproviders = ["fake"]\ninput_price_per_mtok = 1.00\noutput_price_per_mtok = 2.00\n\n'
        f'[plans.tight]\nrequests_per_minute = {PLAN_RPM}\n'
    )
    with distributed_services(["fake"]) as services, ExitStack() as stack:
        env = {**services.environ(), "GATEWAYZ_KEY_SECRET": "shared-limits", "GATEWAYZ_DATA_DIR": str(tmp_path),
               "GATEWAYZ_CONFIG": str(config), "FAKE_KEY": UPSTREAM_KEY}
        assert gatewayz("migrate", env=env, cwd=tmp_path).returncode == 0
        created = gatewayz("keys", "create", "--name", "tight", "--credits", "1", "--plan", "tight", env=env,
                           cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        key = created.stdout.split()[-1]
        stack.enter_context(background("worker", "--provider", "fake", "--concurrency", "8", env=env, cwd=tmp_path,
                                       log=tmp_path / "worker.log"))
        ingresses = {}
        for name in ("ingress-a", "ingress-b"):
            port = free_port()
            ingresses[f"http://127.0.0.1:{port}"] = (name, stack.enter_context(background(
                "ingress", "--port", str(port), env=env, cwd=tmp_path, log=tmp_path / f"{name}.log")))
        for url, (name, process) in ingresses.items():
            wait_until_healthy(url, process, tmp_path / f"{name}.log")
        urls = list(ingresses)
        assert [httpx.get(f"{url}/health").json()["rate_limits"] for url in urls] == ["shared: redis"] * 2

        async def burst() -> list[httpx.Response]:
            body = {"model": "fake-small", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
            async with httpx.AsyncClient(timeout=60, headers={"authorization": f"Bearer {key}"},
                                         limits=httpx.Limits(max_connections=40)) as client:
                return await asyncio.gather(*(client.post(f"{urls[n % 2]}/v1/chat/completions", json=body)
                                              for n in range(40)))

        responses = asyncio.run(burst())
        assert Counter(r.status_code for r in responses) == {200: PLAN_RPM, 429: 40 - PLAN_RPM}
        assert {r.json()["error"]["type"] for r in responses if r.status_code == 429} == {"requests"}
