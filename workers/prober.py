"""The active prober: every ``GATEWAYZ_PROBE_INTERVAL`` seconds, one cheap
call to each enabled provider, its outcome and latency recorded as the
provider's ``probe`` health (``workers.health``), beside what client
requests show. Off by default (interval 0).

What a probe costs (``GATEWAYZ_PROBE_KIND``):
- ``models`` (default): the provider's model list (``GET {base_url}/models``,
  one page), through ``ProviderHTTP``: its own key, sent its way. No tokens
  are bought. The built-in mock provider has no list and is not probed.
- ``chat``: a one-token completion on the provider's first configured
  model, through its adapter. It is billed by the provider: use it where a
  list says too little (a list can answer while generation is down).

A probe fails when the provider cannot be reached, refuses the gateway's
key, answers 5xx or passes ``GATEWAYZ_PROBE_TIMEOUT``; any other answer (a
404 for a missing list, a 429) shows the provider is up, and counts as a
success.

Scheduling is dramatiq's: ``probe_providers`` is an async actor (dramatiq's
AsyncIO middleware runs it on an event loop of its own) on its own queue,
``<namespace>.prober`` — on RabbitMQ in distributed mode, on a ``StubBroker``
with an in-process worker when embedded. Each run re-sends itself with the
interval as its delay. A start, a restart or the periodic re-seed (every
``RESEED_ROUNDS`` intervals, in case a chain was lost with a broker outage)
adds a chain, and two chains would probe twice as often: so a run first
claims the interval for its chain in the health store (``claim_round``,
held for ``ROUND_HOLD`` of an interval), and a run that finds it claimed by
another chain ends its own there. A round's message stays unacknowledged
while it runs: if its prober is killed, RabbitMQ hands it to another, which
finds the claim its chain's and carries the chain on. Each round of a chain
is numbered, and only one run of a round sends the next (``claim_successor``):
a round delivered twice (a prober killed between passing a delayed message
on and acknowledging it) does not split its chain in two. Whatever the
number of chains and prober processes, one round runs per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import dramatiq
from dramatiq.middleware import AsyncIO

from schema.catalog import ProviderSpec
from schema.errors import GatewayError, GatewayTimeout, ProviderUnavailable
from schema.health import Outcome, ProbeKind
from schema.settings import Settings
from schema.translate import translate_request
from workers.adapters import build_adapter
from workers.adapters.anthropic import ANTHROPIC_VERSION
from workers.adapters.http import ProviderHTTP
from workers.health import HealthLog
from workers.health_store import HealthStore, HealthUnavailable

log = logging.getLogger(__name__)

ROUND_HOLD = 0.8  # of an interval: shorter than the gap between one chain's runs, longer than half of it
SUCCESSOR_HOLD = 10  # intervals a round's successor stays claimed: past any redelivery of that round
RESEED_ROUNDS = 10
RESEED_MIN = 60.0  # seconds
STOP_GRACE = 5.0  # seconds past the probe timeout a stopping worker gives a round in flight

StoreOpener = Callable[[], AbstractAsyncContextManager[HealthStore]]

# Model lists, one small page: enough to show the provider answers.
LIST_PATHS = {"openai": "/models", "anthropic": "/models?limit=1", "gemini": "/models?pageSize=1"}


def _failed(error: GatewayError) -> bool:
    """Whether an answer shows the provider down, not merely answering no."""
    return isinstance(error, (GatewayTimeout, ProviderUnavailable)) or error.status >= 500


@dataclass(frozen=True, slots=True)
class Prober:
    providers: tuple[ProviderSpec, ...]
    settings: Settings
    open_store: StoreOpener

    @property
    def interval(self) -> float:
        return self.settings.probe_interval

    @property
    def kind(self) -> ProbeKind:
        return self.settings.probe_kind

    def probed(self) -> list[ProviderSpec]:
        if self.kind == "models":
            return [spec for spec in self.providers if spec.base_url and spec.adapter in LIST_PATHS]
        return [spec for spec in self.providers if spec.models]

    async def run_round(self, chain: str, number: int) -> bool:
        """Probe every provider once, unless this interval's round is
        another chain's; then whether ``chain`` goes on from round
        ``number`` (False: another chain has the round, or another run of
        this same round has already sent the next one)."""
        async with self.open_store() as store:
            try:
                if not await store.claim_round(chain, self.interval * ROUND_HOLD):
                    return False
            except HealthUnavailable as error:
                # Probing anyway: its outcomes are lost too, but the chain
                # lives on and the rounds resume once the store is back.
                log.warning("probe round not claimed: %s", error)
            health = HealthLog(store)
            outcomes = await asyncio.gather(*(self.probe(spec) for spec in self.probed()))
            for spec, outcome in zip(self.probed(), outcomes, strict=True):
                await health.record(spec.name, "probe", outcome)
            try:
                return await store.claim_successor(chain, number, self.interval * SUCCESSOR_HOLD)
            except HealthUnavailable as error:
                log.warning("next probe round not claimed: %s", error)
                return True  # a chain kept twice beats a chain lost

    async def probe(self, spec: ProviderSpec) -> Outcome:
        started = time.monotonic()
        try:
            async with asyncio.timeout(min(self.settings.probe_timeout, spec.timeout)):
                await (self._list(spec) if self.kind == "models" else self._chat(spec))
        except TimeoutError:
            return Outcome(at=time.time(), ok=False, latency=time.monotonic() - started,
                           error=f"provider {spec.name!r} did not answer the probe within "
                                 f"{self.settings.probe_timeout:g}s")
        except GatewayError as error:
            if _failed(error):
                return Outcome(at=time.time(), ok=False, latency=time.monotonic() - started, error=error.message)
        return Outcome(at=time.time(), ok=True, latency=time.monotonic() - started)

    async def _list(self, spec: ProviderSpec) -> None:
        configured = {name.lower() for name in spec.headers}
        extra = {"anthropic-version": ANTHROPIC_VERSION} if (
            spec.adapter == "anthropic" and "anthropic-version" not in configured) else {}
        http = ProviderHTTP(spec, connect_timeout=self.settings.upstream_connect_timeout, headers=extra)
        try:
            await http.get_json(LIST_PATHS[spec.adapter])
        finally:
            await http.aclose()

    async def _chat(self, spec: ProviderSpec) -> None:
        adapter = build_adapter(spec, self.settings)
        payload = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        try:
            await adapter.complete(spec.models[0], translate_request(payload, "openai", adapter.dialect))
        finally:
            await adapter.aclose()


def new_chain() -> str:
    return uuid.uuid4().hex


def declare_actor(broker: dramatiq.Broker, prober: Prober, queue: str) -> dramatiq.Actor[[str | None, int], None]:
    """``probe_providers`` on ``broker``: a round, then itself again after the interval."""
    delay = max(1, round(prober.interval * 1000))

    async def probe_providers(chain: str | None = None, number: int = 0) -> None:
        chain = chain or new_chain()
        try:
            goes_on = await prober.run_round(chain, number)
        except Exception:
            goes_on = True  # a defect in one round must not end the probing
            log.exception("probe round failed")
        if goes_on:
            actor.send_with_options(args=(chain, number + 1), delay=delay)

    actor = dramatiq.actor(
        broker=broker, actor_name="probe_providers", queue_name=queue,
        max_retries=0, time_limit=round((prober.settings.probe_timeout + STOP_GRACE) * 1000))(probe_providers)
    return actor


async def run_prober(prober: Prober, broker: dramatiq.Broker, queue: str) -> None:
    """A dramatiq worker for ``queue`` in this process, until cancelled: it
    seeds a chain at once and again every ``RESEED_ROUNDS`` intervals.
    ``broker``: RabbitMQ's (distributed) or dramatiq's in-process stub
    (embedded), as the runtime chose; the actor runs on its AsyncIO loop."""
    broker.add_middleware(AsyncIO())
    actor = declare_actor(broker, prober, queue)
    worker = dramatiq.Worker(broker, queues={queue}, worker_threads=1, worker_timeout=100)
    await asyncio.to_thread(worker.start)
    log.info("prober probing %d providers every %gs (%s)", len(prober.probed()), prober.interval, prober.kind)
    try:
        while True:
            await asyncio.to_thread(actor.send, new_chain(), 0)
            await asyncio.sleep(max(RESEED_MIN, prober.interval * RESEED_ROUNDS))
    finally:
        await asyncio.to_thread(worker.stop, round((prober.settings.probe_timeout + STOP_GRACE) * 1000))
        await asyncio.to_thread(broker.close)
