"""Priority classes in both modes: a key's plan sets its class, a request
may lower it (never raise it), the response says which class it ran at,
and a saturated pool serves realtime, then standard, then bulk; on
RabbitMQ the class is the job message's priority."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response

from ingress.runtime import Runtime
from loadtests.fake_upstream import FakeUpstream
from scheduler.priority import Work
from scheduler.topology import Topology
from schema.catalog import GatewayConfig, parse_config
from tests.conftest import MODES
from tests.support.gateway import Gateway, gateway_in_mode
from tests.support.servers import serving


class GatedUpstream(FakeUpstream):
    """The fake upstream with one more command: ``gate`` is answered only
    once the test opens the gate. Records what arrives, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.arrivals: list[str] = []

    async def chat(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        said = body["messages"][-1]["content"]
        self.arrivals.append(said)
        while said == "gate" and not self.gate.is_set():
            await asyncio.sleep(0.01)
        return await super().chat(request)


@pytest.fixture(scope="module")
def gated() -> Iterator[GatedUpstream]:
    with serving(GatedUpstream(), "gated upstream") as fake:
        yield fake


def serial_config(upstream_url: str) -> GatewayConfig:
    price = {"input_price_per_mtok": Decimal("1.00"), "output_price_per_mtok": Decimal("2.00")}
    return parse_config({
        "providers": {
            "serial": {"adapter": "openai", "base_url": f"{upstream_url}/v1"},
            "idle": {"adapter": "openai", "base_url": f"{upstream_url}/v1"},  # no pool: its jobs stay queued
        },
        "models": {"serial-model": {"providers": ["serial"], **price}, "idle-model": {"providers": ["idle"], **price}},
        "plans": {"realtime": {"priority": "realtime"}, "bulk": {"priority": "bulk"}},
    }, {})


def one_at_a_time(runtime: Runtime) -> None:
    runtime.start_pool("serial", 1)
    runtime.start_billing()


@pytest.fixture(scope="module", params=MODES)
def serial(request: pytest.FixtureRequest, gated: GatedUpstream,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp(f"serial-{request.param}")
    with gateway_in_mode(request.param, serial_config(gated.url), data_dir,  # type: ignore[attr-defined]
                         roles=one_at_a_time, request_timeout=20) as gateway:
        yield gateway


def queued(gateway: Gateway, provider: str) -> int:
    """Jobs waiting in ``provider``'s queue (not those a worker runs).
    On RabbitMQ, as the gateway counts them (``scheduler.pool_stats``: in
    at the enqueue, out when a worker starts one), since a worker holds a
    bulk job pushed to it (its low queue's prefetch) until it has a slot:
    that job waits, though no queue holds it."""
    runtime = gateway.server.app.state.runtime
    if gateway.settings.broker_url is None:
        return asyncio.run(runtime.jobs.depth(provider))
    return sum(gateway.server.call(runtime.jobs.stats.read(provider)).depth.values())


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


def send(gateway: Gateway, key: str, text: str, *, model: str = "serial-model", priority: str | None = None,
         results: dict[str, httpx.Response] | None = None, timeout: float = 30,
         extra_headers: dict[str, str] | None = None) -> threading.Thread:
    """Post in the background; the response lands in ``results[text]``."""
    headers = {"authorization": f"Bearer {key}", **(extra_headers or {})}
    if priority is not None:
        headers["x-gatewayz-priority"] = priority
    body: dict[str, Any] = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": text}]}

    def post() -> None:
        try:
            response = httpx.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers, timeout=timeout)
        except httpx.TimeoutException:
            return
        if results is not None:
            results[text] = response

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


def test_a_saturated_pool_serves_higher_classes_first(serial: Gateway, gated: GatedUpstream) -> None:
    realtime, bulk, standard = (serial.create_key("1", plan=plan) for plan in ("realtime", "bulk", None))
    gated.gate.clear()
    gated.arrivals.clear()
    results: dict[str, httpx.Response] = {}
    threads = [send(serial, standard, "gate", results=results)]
    wait_until(lambda: gated.arrivals == ["gate"], "the gate job holds the pool's only slot")
    # Sent lowest first; each waits in the queue before the next is sent.
    for count, (text, key, asked) in enumerate([
        ("lowered", realtime, "bulk"),  # a realtime key asks for bulk: it gets bulk
        ("not-raised", bulk, "realtime"),  # a bulk key asks for realtime: it stays bulk
        ("standard", standard, None),
        ("realtime", realtime, None),
    ], start=1):
        threads.append(send(serial, key, text, priority=asked, results=results))
        wait_until(lambda count=count: queued(serial, "serial") == count, f"{count} jobs are queued")
    gated.gate.set()
    for thread in threads:
        thread.join(timeout=30)

    assert gated.arrivals == ["gate", "realtime", "standard", "lowered", "not-raised"]
    assert {text: response.status_code for text, response in results.items()} == dict.fromkeys(
        ["gate", "lowered", "not-raised", "standard", "realtime"], 200)
    assert {text: response.headers["x-gatewayz-priority"] for text, response in results.items()} == {
        "gate": "standard", "lowered": "bulk", "not-raised": "bulk", "standard": "standard", "realtime": "realtime"}
    assert results["realtime"].json()["choices"][0]["message"]["content"] == "Echo: realtime"


def test_the_class_is_the_rabbitmq_message_priority(serial: Gateway) -> None:
    if serial.settings.broker_url is None:
        pytest.skip("the embedded mode has no broker (its queue order is tested above)")
    realtime, bulk, standard = (serial.create_key("1", plan=plan) for plan in ("realtime", "bulk", None))
    # Nobody serves `idle`: the jobs wait in its queue, where the test reads them.
    for text, key, asked in [("r", realtime, None), ("r-as-bulk", realtime, "bulk"), ("s", standard, None),
                             ("b", bulk, None), ("b-as-realtime", bulk, "realtime"), ("s-as-bulk", standard, "bulk")]:
        send(serial, key, text, model="idle-model", priority=asked, timeout=3)
    wait_until(lambda: queued(serial, "idle") == 6, "the six jobs are queued")

    async def take() -> dict[str, tuple[int | None, str]]:
        """Each job's message priority, and the queue it waited in."""
        connection = await aio_pika.connect(serial.settings.broker_url)  # type: ignore[arg-type]
        priorities: dict[str, tuple[int | None, str]] = {}
        topology = Topology(serial.settings.namespace)
        async with connection:
            channel = await connection.channel()
            for name, count in ((topology.job_queue("idle", Work.REALTIME), 1), (topology.job_queue("idle"), 1),
                                (topology.job_queue("idle", Work.LOW), 4)):
                queue = await channel.declare_queue(name, passive=True)
                for _ in range(count):
                    message = await queue.get(timeout=5)
                    job = orjson.loads(message.body)
                    priorities[job["payload"]["messages"][-1]["content"]] = (message.priority, name.rpartition(".")[2])
                    assert job["priority"] == message.priority
                    await message.ack()
        return priorities

    # Each kind of work waits in a queue of its own (reserved slots): bulk jobs in the provider's low
    # queue, realtime ones in its realtime queue, standard ones in its main queue.
    assert asyncio.run(take()) == {"r": (4, "realtime"), "r-as-bulk": (1, "low"), "s": (2, "idle"), "b": (1, "low"),
                                   "b-as-realtime": (1, "low"), "s-as-bulk": (1, "low")}
