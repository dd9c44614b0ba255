"""Reserved slots in both modes (issue 12): a pool of 4 keeps 1 slot from
bulk and batch work, so a saturating stream of slow bulk jobs holds at most
3 slots and a realtime or standard job starts at once beside them; a slot
that frees goes to a waiting standard job before a waiting bulk one; and
interactive traffic alone still uses all 4 slots. With one slot kept for
realtime work (``GATEWAYZ_REALTIME_SLOTS``), a saturating stream of slow
standard jobs holds at most 3 slots and a realtime job starts at once.

The fake upstream holds each ``hold <name>`` request until the test
releases ``name``, so "slow" lasts exactly as long as the test needs, and
counts the requests it holds: what the pool runs at once, as the provider
sees it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response

from ingress.runtime import Runtime
from loadtests.fake_upstream import FakeUpstream
from schema.catalog import GatewayConfig, parse_config
from tests.conftest import MODES
from tests.contract.test_priorities import send, wait_until
from tests.support.gateway import Gateway, gateway_in_mode
from tests.support.servers import serving

CONCURRENCY = 4  # the default reserve of a pool of 4 is 1 slot: low work may hold 3
PRICE = {"input_price_per_mtok": Decimal("1.00"), "output_price_per_mtok": Decimal("2.00")}


class HoldingUpstream(FakeUpstream):
    """The fake upstream, holding every ``hold <name>`` request until
    ``release(name)``; ``held`` is what it holds now, ``arrivals`` every
    request's text in order of arrival."""

    def __init__(self) -> None:
        super().__init__()
        self.released: set[str] = set()
        self.held: list[str] = []
        self.arrivals: list[str] = []
        self._lock = threading.Lock()

    def release(self, *names: str) -> None:
        self.released.update(names)

    async def chat(self, request: Request) -> Response:
        said = orjson.loads(await request.body())["messages"][-1]["content"]
        with self._lock:
            self.arrivals.append(said)
        command, _, name = said.partition(" ")
        if command == "hold":
            with self._lock:
                self.held.append(name)
            try:
                while name not in self.released:
                    await asyncio.sleep(0.005)
            finally:
                with self._lock:
                    self.held.remove(name)
        return await super().chat(request)


@pytest.fixture(scope="module")
def upstream() -> Iterator[HoldingUpstream]:
    with serving(HoldingUpstream(), "holding upstream") as fake:
        yield fake


def reserve_config(upstream_url: str) -> GatewayConfig:
    return parse_config({
        "providers": {name: {"adapter": "openai", "base_url": f"{upstream_url}/v1"} for name in ("mixed", "plain")},
        "models": {f"{name}-model": {"providers": [name], **PRICE} for name in ("mixed", "plain")},
        "plans": {"realtime": {"priority": "realtime"}, "bulk": {"priority": "bulk"}},
    }, {})


def pools_of_four(runtime: Runtime) -> None:
    runtime.start_pool("mixed", CONCURRENCY)
    runtime.start_pool("plain", CONCURRENCY)
    runtime.start_billing()


@pytest.fixture(scope="module", params=MODES)
def gateway(request: pytest.FixtureRequest, upstream: HoldingUpstream,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp(f"reserve-{request.param}")
    # Admission off: the held jobs would otherwise make it refuse bulk work
    # it estimates (at a default service time) to wait too long.
    with gateway_in_mode(request.param, reserve_config(upstream.url), data_dir,  # type: ignore[attr-defined]
                         roles=pools_of_four, request_timeout=30, admission_control=False) as gateway:
        yield gateway


@pytest.fixture(scope="module", params=MODES)
def guarded(request: pytest.FixtureRequest, upstream: HoldingUpstream,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """As ``gateway``, its pools keeping one slot for realtime work alone."""
    data_dir = tmp_path_factory.mktemp(f"realtime-reserve-{request.param}")
    with gateway_in_mode(request.param, reserve_config(upstream.url), data_dir,  # type: ignore[attr-defined]
                         roles=pools_of_four, request_timeout=30, admission_control=False,
                         realtime_slots=1) as gateway:
        yield gateway


class Traffic:
    """Requests sent in the background to one model, each text tagged so
    that tests never see each other's: ``hold`` ones are held by the
    upstream until released. Leaving ``traffic`` releases them all and
    waits for every answer."""

    def __init__(self, gateway: Gateway, upstream: HoldingUpstream, model: str) -> None:
        self.gateway, self.upstream, self.model = gateway, upstream, model
        self.tag = f"{gateway.settings.namespace}-{time.monotonic_ns()}"
        self.results: dict[str, httpx.Response] = {}
        self.threads: list[threading.Thread] = []
        self.names: list[str] = []

    def send(self, key: str, name: str, *, hold: bool = True) -> None:
        self.names.append(name)
        text = f"hold {self.tag}-{name}" if hold else f"{self.tag}-{name}"
        self.threads.append(send(self.gateway, key, text, model=self.model, results=self.results))

    def held(self, prefix: str = "") -> list[str]:
        """The names of this traffic's requests the upstream holds now."""
        mine = f"{self.tag}-"
        return sorted(name.removeprefix(mine) for name in list(self.upstream.held)
                      if name.startswith(mine + prefix))

    def arrived(self, name: str) -> bool:
        return f"{self.tag}-{name}" in self.upstream.arrivals

    def release(self, *names: str) -> None:
        self.upstream.release(*(f"{self.tag}-{name}" for name in names))


@contextmanager
def traffic(gateway: Gateway, upstream: HoldingUpstream, model: str) -> Iterator[Traffic]:
    sent = Traffic(gateway, upstream, model)
    try:
        yield sent
    finally:
        sent.release(*sent.names)
        for thread in sent.threads:
            thread.join(timeout=30)
    assert len(sent.results) == len(sent.threads)
    assert {response.status_code for response in sent.results.values()} == {200}


def saturate(sent: Traffic, key: str, kind: str) -> None:
    """Six held jobs of ``key``, named ``<kind>N``: they fill the 3 slots
    their kind may hold, and no more."""
    for index in range(6):
        sent.send(key, f"{kind}{index}")
    wait_until(lambda: len(sent.held(kind)) == CONCURRENCY - 1, f"{kind} jobs fill their 3 slots")
    time.sleep(0.3)  # time for a 4th, were it to be taken
    assert len(sent.held(kind)) == CONCURRENCY - 1, f"{kind} work never takes the reserved slot"


def answered_at_once(sent: Traffic, key: str, name: str) -> None:
    """A request of ``key``, not held, is answered without waiting for a held job to end."""
    text = f"{sent.tag}-{name}"
    started = time.monotonic()
    response = httpx.post(f"{sent.gateway.base_url}/chat/completions", timeout=10,
                          headers={"authorization": f"Bearer {key}"},
                          json={"model": sent.model, "messages": [{"role": "user", "content": text}]})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == f"Echo: {text}"
    assert int(response.headers["x-gatewayz-queue-ms"]) < 1000
    assert time.monotonic() - started < 5


def test_low_work_leaves_the_reserved_slot_to_interactive_jobs(gateway: Gateway, upstream: HoldingUpstream) -> None:
    bulk, realtime, standard = (gateway.create_key("10", plan=plan) for plan in ("bulk", "realtime", None))
    with traffic(gateway, upstream, "mixed-model") as sent:
        saturate(sent, bulk, "bulk")
        # The pool is saturated with bulk work that will not end before the
        # test says so: these can only be answered from the reserved slot.
        answered_at_once(sent, realtime, "realtime")
        answered_at_once(sent, standard, "standard")
        assert len(sent.held("bulk")) == CONCURRENCY - 1, "no bulk job ended meanwhile"


def test_a_freed_slot_goes_to_a_waiting_interactive_job_first(gateway: Gateway, upstream: HoldingUpstream) -> None:
    bulk, standard = (gateway.create_key("10", plan=plan) for plan in ("bulk", None))
    with traffic(gateway, upstream, "mixed-model") as sent:
        # Two bulk and two standard jobs fill the pool; bulk may still take a third slot.
        for name in ("bulk0", "bulk1", "std0", "std1"):
            sent.send(bulk if name.startswith("bulk") else standard, name)
        wait_until(lambda: len(sent.held()) == CONCURRENCY, "four jobs fill the pool")
        sent.send(bulk, "bulk-waiting", hold=False)
        time.sleep(0.3)  # the bulk job waits first
        sent.send(standard, "std-waiting")
        time.sleep(0.3)
        assert sent.held() == ["bulk0", "bulk1", "std0", "std1"]
        assert not sent.arrived("bulk-waiting")
        sent.release("std0")  # one slot frees
        wait_until(lambda: "std-waiting" in sent.held(), "the waiting standard job takes it")
        time.sleep(0.3)
        assert not sent.arrived("bulk-waiting"), "the bulk job still waits for a slot"
        sent.release("std1")
        wait_until(lambda: sent.arrived("bulk-waiting"), "the bulk job gets the next slot")


def test_interactive_jobs_alone_use_every_slot(gateway: Gateway, upstream: HoldingUpstream) -> None:
    standard = gateway.create_key("10")
    with traffic(gateway, upstream, "plain-model") as sent:
        for index in range(CONCURRENCY + 1):
            sent.send(standard, f"std{index}")
        wait_until(lambda: len(sent.held()) == CONCURRENCY, "standard jobs fill all 4 slots")
        time.sleep(0.3)
        assert len(sent.held()) == CONCURRENCY, "and no more"


def test_standard_work_leaves_the_realtime_slot(guarded: Gateway, upstream: HoldingUpstream) -> None:
    realtime, standard = (guarded.create_key("10", plan=plan) for plan in ("realtime", None))
    with traffic(guarded, upstream, "plain-model") as sent:
        saturate(sent, standard, "std")
        answered_at_once(sent, realtime, "realtime")
        assert len(sent.held("std")) == CONCURRENCY - 1, "no standard job ended meanwhile"
