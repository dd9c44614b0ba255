"""Queue wait and admission control in both modes: every response says how
long its job waited (``x-gatewayz-queue-ms``); a saturated pool refuses at
once, with a 503 and a computed ``retry-after`` and no charge, a request
whose queue deadline it cannot meet, while a longer deadline or a higher
class is still admitted; ``GET /admin/pools`` shows the pools; worker
processes appear there and disappear when killed.

Each test saturates its own provider (a pool of one held by the gated
fake upstream), so no test inherits another's service history. Jobs are
assumed to take 1 s (``default_service_time``) on a pool that has
finished none yet, so the estimates are exact: ``(ahead + 1) / 1 s``.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingress.runtime import Runtime
from schema.catalog import GatewayConfig, parse_config
from tests.conftest import MODES
from tests.contract.test_priorities import GatedUpstream, gated, send, wait_until  # noqa: F401 (fixture)
from tests.support.gateway import ADMIN_TOKEN, Gateway, gateway_in_mode
from tests.support.processes import background

PROVIDERS = ["headers", "refusal", "classes", "pools", "promise", "spawned"]
PRICE = {"input_price_per_mtok": Decimal("1.00"), "output_price_per_mtok": Decimal("2.00")}
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def config(upstream_url: str) -> GatewayConfig:
    providers = {name: {"adapter": "openai", "base_url": f"{upstream_url}/v1"} for name in PROVIDERS}
    models: dict[str, Any] = {f"{name}-model": {"providers": [name], **PRICE} for name in PROVIDERS}
    models["headers-embed"] = {"kind": "embeddings", "providers": ["headers"], "input_price_per_mtok": Decimal(1)}
    return parse_config({"providers": providers, "models": models,
                         "plans": {"realtime": {"priority": "realtime"}, "bulk": {"priority": "bulk"}}}, {})


def pools_of_one(runtime: Runtime) -> None:
    for name in PROVIDERS:
        if name != "spawned":  # served by a worker process the test starts
            runtime.start_pool(name, 1)
    runtime.start_billing()


@pytest.fixture(scope="module", params=MODES)
def saturable(request: pytest.FixtureRequest, gated: GatedUpstream,  # noqa: F811
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp(f"admission-{request.param}")
    with gateway_in_mode(request.param, config(gated.url), data_dir, roles=pools_of_one,  # type: ignore[attr-defined]
                         request_timeout=30, default_service_time=1.0, queue_deadline_bulk=3.0,
                         pool_gone_after=1.0, admin_token=ADMIN_TOKEN) as gateway:
        yield gateway


def pool(gateway: Gateway, provider: str) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}/admin/pools", params={"provider": provider}, headers=ADMIN)
    assert response.status_code == 200, response.text
    (found,) = response.json()["data"]
    return found


def post(gateway: Gateway, key: str, provider: str, text: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {key}", **headers},
                      json={"model": f"{provider}-model", "max_tokens": 5,
                            "messages": [{"role": "user", "content": text}]})


def saturate(gateway: Gateway, gated: GatedUpstream, provider: str, key: str, waiting: int,  # noqa: F811
             results: dict[str, httpx.Response]) -> list[Any]:
    """Hold ``provider``'s only slot with a gated job and queue ``waiting``
    standard jobs behind it; the gate is closed until the test opens it."""
    gated.gate.clear()
    gated.arrivals.clear()
    threads = [send(gateway, key, "gate", model=f"{provider}-model", results=results)]
    wait_until(lambda: gated.arrivals == ["gate"], "the gate job holds the pool's only slot")
    for n in range(waiting):
        threads.append(send(gateway, key, f"queued {n}", model=f"{provider}-model", results=results))
    wait_until(lambda: pool(gateway, provider)["depth_by_priority"]["2"] == waiting, f"{waiting} jobs wait")
    return threads


def release(gated: GatedUpstream, threads: list[Any]) -> None:  # noqa: F811
    gated.gate.set()
    for thread in threads:
        thread.join(timeout=30)


def test_every_response_says_how_long_its_job_waited(saturable: Gateway, gated: GatedUpstream) -> None:  # noqa: F811
    gated.gate.set()
    key = saturable.create_key("1")
    auth = {"authorization": f"Bearer {key}"}
    chat = {"model": "headers-model", "max_tokens": 5, "messages": [{"role": "user", "content": "hello"}]}
    answers = [
        httpx.post(f"{saturable.base_url}/chat/completions", json=chat, headers=auth),
        httpx.post(f"{saturable.base_url}/chat/completions", json={**chat, "stream": True}, headers=auth),
        httpx.post(f"{saturable.base_url}/messages", json=chat, headers=auth),
        httpx.post(f"{saturable.base_url}/messages", json={**chat, "stream": True}, headers=auth),
        httpx.post(f"{saturable.base_url}/embeddings", json={"model": "headers-embed", "input": "hi"}, headers=auth),
    ]
    assert [answer.status_code for answer in answers] == [200] * 5, [answer.text for answer in answers]
    waits = [int(answer.headers["x-gatewayz-queue-ms"]) for answer in answers]
    assert all(0 <= wait < 1000 for wait in waits), waits  # an idle pool of one takes each at once

    # A worker's error is still this job's answer: it says how long it waited too.
    refused = post(saturable, key, "headers", "fail:400")
    assert refused.status_code == 400
    assert 0 <= int(refused.headers["x-gatewayz-queue-ms"]) < 1000
    assert refused.headers["x-gatewayz-job-id"].startswith("job_")

    # Behind a job that holds the only slot for a second, the wait is that second.
    results: dict[str, httpx.Response] = {}
    threads = saturate(saturable, gated, "headers", key, 1, results)
    time.sleep(1.0)
    release(gated, threads)
    assert results["gate"].status_code == 200 and results["queued 0"].status_code == 200
    assert int(results["gate"].headers["x-gatewayz-queue-ms"]) < 1000
    assert 1000 <= int(results["queued 0"].headers["x-gatewayz-queue-ms"]) < 10_000


def test_a_saturated_pool_refuses_what_it_cannot_serve_in_time(saturable: Gateway,
                                                               gated: GatedUpstream) -> None:  # noqa: F811
    key = saturable.create_key("1")
    results: dict[str, httpx.Response] = {}
    threads = saturate(saturable, gated, "refusal", key, 3, results)
    try:
        balance = saturable.balance(key)
        held = saturable.held(key)
        # 3 ahead and no free slot: (3 + 1) jobs at 1 s each, more than 2 s.
        refused = post(saturable, key, "refusal", "hurry", **{"x-gatewayz-max-queue-ms": "2000"})
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "queue_full"
        assert "estimated queue wait is 4.0s" in refused.json()["error"]["message"]
        assert refused.headers["retry-after"] == "2"  # when 4 s of queue would fit 2 s
        anthropic = httpx.post(f"{saturable.base_url}/messages", timeout=30,
                               headers={"x-api-key": key, "x-gatewayz-max-queue-ms": "2000"},
                               json={"model": "refusal-model", "max_tokens": 5,
                                     "messages": [{"role": "user", "content": "hurry"}]})
        assert anthropic.status_code == 503
        assert anthropic.json()["error"]["type"] == "overloaded_error"
        assert anthropic.headers["retry-after"] == "2"
        assert (saturable.balance(key), saturable.held(key)) == (balance, held), "a refusal holds nothing"
        assert "hurry" not in gated.arrivals

        invalid = post(saturable, key, "refusal", "hurry", **{"x-gatewayz-max-queue-ms": "soon"})
        assert invalid.status_code == 400
        assert invalid.json()["error"]["param"] == "x-gatewayz-max-queue-ms"

        # The same request, willing to wait 10 s, is queued (and answered once the gate opens).
        threads.append(send(saturable, key, "patient", model="refusal-model", results=results))
        wait_until(lambda: pool(saturable, "refusal")["depth_by_priority"]["2"] == 4, "the patient job waits")
    finally:
        release(gated, threads)
    assert results["patient"].status_code == 200, results["patient"].text
    assert int(results["patient"].headers["x-gatewayz-queue-ms"]) > 0


def test_a_job_that_waits_past_the_queue_deadline_its_client_set_never_runs(saturable: Gateway,
                                                                            gated: GatedUpstream) -> None:  # noqa: F811
    key = saturable.create_key("1")
    results: dict[str, httpx.Response] = {}
    threads = saturate(saturable, gated, "promise", key, 0, results)
    try:
        # Admitted (the slot is busy: (0 + 1) jobs at 1 s fit 1.5 s), but the slot stays busy for 3 s.
        threads.append(send(saturable, key, "hurry", model="promise-model", results=results,
                            extra_headers={"x-gatewayz-max-queue-ms": "1500"}))
        wait_until(lambda: pool(saturable, "promise")["depth_by_priority"]["2"] == 1, "the hurried job waits")
        time.sleep(3.0)
    finally:
        release(gated, threads)
    refused = results["hurry"]
    assert refused.status_code == 504, refused.text
    assert refused.json()["error"]["code"] == "queue_timeout"
    assert refused.headers["x-gatewayz-job-id"].startswith("job_")
    assert int(refused.headers["x-gatewayz-queue-ms"]) >= 1500
    assert "hurry" not in gated.arrivals, "it never reached the provider"
    assert results["gate"].status_code == 200
    wait_until(lambda: saturable.held(key) == 0, "every hold is settled")
    usage = httpx.get(f"{saturable.url}/user/usage", headers={"authorization": f"Bearer {key}"}).json()["data"]
    costs = {row["job_id"]: row["cost_micros"] for row in usage}
    assert costs[refused.headers["x-gatewayz-job-id"]] == 0
    assert costs[results["gate"].headers["x-gatewayz-job-id"]] > 0


def test_realtime_is_admitted_where_bulk_is_refused(saturable: Gateway, gated: GatedUpstream) -> None:  # noqa: F811
    standard, realtime, bulk = (saturable.create_key("1", plan=plan) for plan in (None, "realtime", "bulk"))
    results: dict[str, httpx.Response] = {}
    threads = saturate(saturable, gated, "classes", standard, 2, results)
    try:
        # Bulk waits behind the 2 standard jobs: (2 + 1) jobs at 1 s, more than 2.5 s.
        refused = post(saturable, bulk, "classes", "bulk job", **{"x-gatewayz-max-queue-ms": "2500"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        # By its class's default deadline (GATEWAYZ_QUEUE_DEADLINE_BULK=3 here) it fits exactly: 3 s.
        pool_now = pool(saturable, "classes")
        assert pool_now["estimated_wait"] == {"realtime": 1.0, "standard": 3.0, "bulk": 3.0}
        # A realtime job is ahead of them all: only the job in hand before it, 1 s.
        threads.append(send(saturable, realtime, "realtime job", model="classes-model", results=results))
        threads.append(send(saturable, standard, "standard job", model="classes-model", results=results))
        wait_until(lambda: pool(saturable, "classes")["depth_by_priority"] == {"4": 1, "3": 0, "2": 3, "1": 0, "0": 0},
                   "the realtime and standard jobs wait")
        # Now 3 standard jobs and one realtime one are ahead of a bulk job: 5 s > 3 s.
        refused = post(saturable, bulk, "classes", "bulk job")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "queue_full"
        assert refused.headers["retry-after"] == "2"
        # A realtime job still is: 1 realtime ahead, (1 + 1) s < 10 s.
        threads.append(send(saturable, realtime, "realtime two", model="classes-model", results=results))
        wait_until(lambda: pool(saturable, "classes")["depth_by_priority"]["4"] == 2, "the second realtime job waits")
    finally:
        release(gated, threads)
    assert {text: results[text].status_code for text in ("realtime job", "realtime two", "standard job")} == \
        dict.fromkeys(("realtime job", "realtime two", "standard job"), 200)
    assert gated.arrivals[:3] == ["gate", "realtime job", "realtime two"]


def test_admin_pools_shows_a_busy_pool(saturable: Gateway, gated: GatedUpstream) -> None:  # noqa: F811
    key = saturable.create_key("1")
    assert httpx.get(f"{saturable.url}/admin/pools").status_code == 401
    results: dict[str, httpx.Response] = {}
    threads = saturate(saturable, gated, "pools", key, 3, results)
    try:
        wait_until(lambda: pool(saturable, "pools")["in_flight"] == 1, "the pool reports its job in hand")
        seen = pool(saturable, "pools")
    finally:
        release(gated, threads)
    assert {name: seen[name] for name in ("provider", "depth", "depth_by_priority", "consumers", "concurrency",
                                          "in_flight", "circuit")} == {
        "provider": "pools", "depth": 3, "depth_by_priority": {"4": 0, "3": 0, "2": 3, "1": 0, "0": 0},
        "consumers": 1, "concurrency": 1, "in_flight": 1, "circuit": "closed"}
    assert seen["estimated_wait"] == {"realtime": 1.0, "standard": 4.0, "bulk": 4.0}
    assert [worker["concurrency"] for worker in seen["workers"]] == [1]

    wait_until(lambda: pool(saturable, "pools")["in_flight"] == 0, "the pool is idle")
    idle = pool(saturable, "pools")
    assert (idle["depth"], idle["estimated_wait"]) == (0, {"realtime": 0.0, "standard": 0.0, "bulk": 0.0})
    wait_until(lambda: pool(saturable, "pools")["workers"][0]["completed"] >= 4, "the pool counts its jobs")
    assert pool(saturable, "pools")["service_rate"] > 0
    assert httpx.get(f"{saturable.url}/admin/pools", params={"provider": "nope"}, headers=ADMIN).status_code == 404


def test_worker_processes_appear_and_disappear(saturable: Gateway, gated: GatedUpstream,  # noqa: F811
                                               tmp_path: Path) -> None:
    if saturable.settings.broker_url is None:
        pytest.skip("embedded pools live in the gateway's own process")
    gated.gate.set()
    assert pool(saturable, "spawned")["consumers"] == 0
    key = saturable.create_key("1")
    settings = saturable.settings
    config_file = tmp_path / "gatewayz.toml"
    config_file.write_text(f'[providers.spawned]\nbase_url = "{gated.url}/v1"\n\n'  # type: ignore[attr-defined]
                           '[models.spawned-model]\nproviders = ["spawned"]\n'
                           'input_price_per_mtok = 1\noutput_price_per_mtok = 2\n')
    env = {"GATEWAYZ_BROKER_URL": str(settings.broker_url), "GATEWAYZ_REDIS_URL": str(settings.redis_url),
           "GATEWAYZ_DATABASE_URL": str(settings.database_url), "GATEWAYZ_NAMESPACE": settings.namespace,
           "GATEWAYZ_CONFIG": str(config_file), "GATEWAYZ_KEY_SECRET": "unused", "GATEWAYZ_DATA_DIR": str(tmp_path)}
    with background("worker", "--provider", "spawned", "--concurrency", "3", env=env, cwd=tmp_path,
                    log=tmp_path / "worker.log") as worker, \
            background("worker", "--provider", "spawned", "--concurrency", "2", env=env, cwd=tmp_path,
                       log=tmp_path / "worker-2.log") as second:
        wait_until(lambda: pool(saturable, "spawned")["consumers"] == 2, "both workers report", timeout=60)
        assert pool(saturable, "spawned")["concurrency"] == 5
        answered = post(saturable, key, "spawned", "hello")
        assert answered.status_code == 200 and "x-gatewayz-queue-ms" in answered.headers

        second.send_signal(signal.SIGTERM)  # leaves at once, as it stops
        second.wait(timeout=30)
        assert pool(saturable, "spawned")["concurrency"] == 3
        worker.send_signal(signal.SIGKILL)  # cannot say goodbye: its beat expires
        worker.wait(timeout=10)
        killed = time.monotonic()
        wait_until(lambda: pool(saturable, "spawned")["consumers"] == 0, "the killed worker disappears")
        assert time.monotonic() - killed < 5

    # Gone for longer than GATEWAYZ_POOL_GONE_AFTER (1 s here): refused at once, not left to wait.
    time.sleep(1.2)
    started = time.monotonic()
    refused = post(saturable, key, "spawned", "anyone?")
    assert time.monotonic() - started < 2
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_workers"
    assert int(refused.headers["retry-after"]) >= 1
