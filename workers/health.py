"""Provider health beside the circuits: each provider's recent success rate
and latency, from the outcomes of client requests (passive, recorded by the
pool around every upstream attempt) and from the active prober's calls
(``workers.prober``).

A request's outcome counts only when it says something about the provider,
by the same rule as the circuit breakers (``workers.resilience.breaker_scope``):
the client's own 4xx, a 429, a cancellation or an open circuit (no call
made) are not recorded. Its latency is the whole attempt, streaming
included; a probe's is one small call, so the two are reported apart.

Recording never fails a job, nor delays it: a pool notes each outcome
(``note``) and one background writer stores what was noted, many outcomes
in one round trip when they come faster than the store answers. An outcome
reaches the store a moment after its attempt ended (and after its answer
went out); one the store cannot take, or noted as the process stops, is
dropped with a warning, as health is advice.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from schema.health import HEALTH_SOURCES, HealthSource, Outcome
from workers.health_store import HealthStore, HealthUnavailable, Observed
from workers.health_store.memory import MemoryHealthStore
from workers.resilience import breaker_scope

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Activity:
    """One provider's recent outcomes from one source, summed up."""

    count: int
    successes: int
    success_rate: float | None  # None: no outcome yet
    latency_p50: float | None  # seconds, over successful calls
    latency_p95: float | None
    last_at: float | None
    last_ok: bool | None
    last_error: str | None  # the most recent failure's message, if any is recent


def summarize(outcomes: list[Outcome]) -> Activity:
    """``outcomes`` newest first."""
    if not outcomes:
        return Activity(0, 0, None, None, None, None, None, None)
    successes = [outcome.latency for outcome in outcomes if outcome.ok]
    p50 = p95 = None
    if len(successes) == 1:
        p50 = p95 = successes[0]
    elif successes:
        cuts = statistics.quantiles(successes, n=20, method="inclusive")
        p50, p95 = statistics.median(successes), cuts[18]
    last_failure = next((outcome for outcome in outcomes if not outcome.ok), None)
    return Activity(len(outcomes), len(successes), round(len(successes) / len(outcomes), 4), p50, p95,
                    outcomes[0].at, outcomes[0].ok, last_failure.error if last_failure else None)


class HealthLog:
    def __init__(self, store: HealthStore | None = None) -> None:
        self.store: HealthStore = store if store is not None else MemoryHealthStore()
        self._noted: list[Observed] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, provider: str, source: HealthSource, outcome: Outcome) -> None:
        await self._store([Observed(provider, source, outcome)])

    def note(self, provider: str, source: HealthSource, outcome: Outcome) -> None:
        """Record in the background: outcomes noted while a write is in
        flight go together in the next one."""
        self._noted.append(Observed(provider, source, outcome))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="provider health")

    async def _write(self) -> None:
        while self._noted:
            batch, self._noted = self._noted, []
            await self._store(batch)

    async def _store(self, outcomes: list[Observed]) -> None:
        try:
            await self.store.record(outcomes)
        except HealthUnavailable as error:
            log.warning("health of %s not recorded: %s", ", ".join(sorted({item.provider for item in outcomes})),
                        error)

    @asynccontextmanager
    async def observe(self, provider: str) -> AsyncIterator[None]:
        """Note one upstream attempt on ``provider`` as a request outcome."""
        started = time.monotonic()
        try:
            yield
        except BaseException as error:
            if breaker_scope(error) is not None:
                self.note(provider, "requests", Outcome(at=time.time(), ok=False, latency=time.monotonic() - started,
                                                        error=str(error)))
            raise
        self.note(provider, "requests", Outcome(at=time.time(), ok=True, latency=time.monotonic() - started))

    async def report(self, providers: Iterable[str]) -> dict[str, dict[HealthSource, Activity]]:
        """Each provider's activity per source; empty when the store is unreachable."""
        providers = list(providers)
        try:
            recent = await self.store.recent(providers)
        except HealthUnavailable as error:
            log.warning("provider health not read: %s", error)
            recent = {}
        return {provider: {source: summarize(recent.get(provider, {}).get(source, [])) for source in HEALTH_SOURCES}
                for provider in providers}
