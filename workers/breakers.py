"""Circuit breakers per provider and per provider and model, on pybreaker's
state machine, with their state shared by every worker (``BreakerStore``).

Each upstream attempt runs under two breakers: the provider's (``acme``),
which failures of the whole provider open, and the model's
(``acme/small-v2``), which failures of that model open
(``workers.resilience.breaker_scope`` decides which). An open circuit
refuses the attempt at once with ``CircuitOpen``, and the pool hands the job
to the next candidate. After ``reset_timeout`` seconds one attempt, and only
one, is let through as a probe (``half-open``): its success closes the
circuit, its failure opens it again.

pybreaker is synchronous, its Redis storage blocks and ``call_async`` is
for Tornado; so, for asyncio, each attempt loads the shared records (one
round trip, which a pool makes alongside taking the job for its first
attempt: ``load``, then ``guard(loaded=…)``), runs pybreaker's ``calling()`` on a copy of each, and writes a
changed copy back with a compare-and-set, replaying the outcome on the
fresh record when another worker wrote first. The half-open probe is
claimed the same way, before the attempt runs, so two workers never probe
at once; a probe whose worker vanished is given up after ``reset_timeout``.

When the store cannot be reached, attempts run unguarded (and their
outcomes are not counted) rather than fail: a breaker protects providers,
it must not become the outage.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pybreaker

from schema.circuits import CircuitRecord, CircuitState
from schema.errors import CircuitOpen, StoreUnavailable
from schema.jobs import Route
from workers.breaker_store import BreakerStore
from workers.resilience import Scope, breaker_scope

log = logging.getLogger(__name__)

SWAP_TRIES = 16  # compare-and-set attempts before an outcome is dropped (logged)


def model_breaker(provider: str, model: str) -> str:
    return f"{provider}/{model}"


def candidate_breakers(route: Route) -> tuple[str, str]:
    """The two breakers an attempt on this candidate runs under."""
    return route.provider, model_breaker(route.provider, route.upstream_model)


class _Mirror(pybreaker.CircuitBreakerStorage):
    """pybreaker's storage interface over one loaded record."""

    def __init__(self, record: CircuitRecord, clock: Callable[[], float]) -> None:
        super().__init__("gatewayz")
        self.record = record
        self._clock = clock

    @property
    def state(self) -> str:
        return self.record.state

    @state.setter
    def state(self, state: str) -> None:
        if state == "half-open" and self.record.state != "half-open":
            self.record.probe_at = self._clock()
        # pybreaker's storage types the state as str; it only ever sets its three names, ours.
        self.record.state = cast(CircuitState, state)

    def increment_counter(self) -> None:
        self.record.failures += 1

    def reset_counter(self) -> None:
        self.record.failures = 0

    def increment_success_counter(self) -> None:
        self.record.successes += 1

    def reset_success_counter(self) -> None:
        self.record.successes = 0

    @property
    def counter(self) -> int:
        return self.record.failures

    @property
    def success_counter(self) -> int:
        return self.record.successes

    # pybreaker reads and sets ``opened_at`` against its own clock, always
    # "now"; the record keeps the gateway's clock (one clock for every
    # process's records, and one that tests can move).
    @property
    def opened_at(self) -> datetime | None:
        at = self.record.opened_at
        return datetime.now(UTC) - timedelta(seconds=self._clock() - at) if at is not None else None

    @opened_at.setter
    def opened_at(self, at: datetime) -> None:
        self.record.opened_at = self._clock()


@dataclass
class _Passage:
    """One attempt going through one breaker: the record it was admitted
    on, and pybreaker's ``calling()`` still open around the attempt (None
    on a healthy circuit until the attempt fails: see ``Breakers._admit``)."""

    name: str
    scope: Scope
    record: CircuitRecord
    admitted: CircuitState  # the state the attempt runs under: closed, or half-open as the probe
    calling: AbstractContextManager[Any] | None

    @property
    def probe(self) -> bool:
        return self.admitted == "half-open"


class Breakers:
    def __init__(self, store: BreakerStore, *, failures: int = 5, reset_timeout: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.failures = failures
        self.reset_timeout = reset_timeout
        self._clock = clock
        # One writer per breaker in this process: its jobs then never race
        # each other's compare-and-set, only other processes' do.
        self._writing: dict[str, asyncio.Lock] = {}

    def _breaker(self, record: CircuitRecord) -> pybreaker.CircuitBreaker:
        # Errors that say nothing about health are judged by breaker_scope and
        # never reach pybreaker; every error that does is a failure.
        return pybreaker.CircuitBreaker(fail_max=self.failures, reset_timeout=self.reset_timeout,
                                        state_storage=_Mirror(record, self._clock), throw_new_error_on_trip=False)

    async def load(self, provider: str, model: str) -> list[CircuitRecord] | None:
        """The records an attempt on ``provider``'s ``model`` runs under, in
        one round trip; None when the store cannot be reached."""
        try:
            return await self.store.load(provider, model_breaker(provider, model))
        except StoreUnavailable as error:
            log.warning("circuits of %s not checked: %s", provider, error)
            return None

    @asynccontextmanager
    async def guard(self, provider: str, model: str, *,
                    loaded: list[CircuitRecord] | None = None) -> AsyncIterator[None]:
        """Run one attempt on ``provider``'s ``model`` under both breakers;
        raises ``CircuitOpen`` (before the attempt) when either refuses it.
        ``loaded``: the records ``load`` gave just now, which spares reading
        them again (without them, or if that found no store, it reads)."""
        names: tuple[tuple[str, Scope], ...] = ((provider, "provider"), (model_breaker(provider, model), "model"))
        records = loaded if loaded is not None else await self.load(provider, model)
        if records is None:
            yield
            return
        passages = [self._admit(name, scope, record) for (name, scope), record in zip(names, records, strict=True)]
        for passage in passages:
            if passage.probe and not await self._swap(passage.name, passage.record):
                raise CircuitOpen(f"{passage.name} is being probed by another worker", retry_after=self.reset_timeout)
            if passage.probe:
                passage.record.version += 1
                log.info("circuit %s half-open: this attempt is its probe", passage.name)
        try:
            yield
        except BaseException as error:
            scope = breaker_scope(error)
            for passage in passages:
                if passage.scope == scope:
                    await self._settle(passage, error)
            raise
        else:
            for passage in passages:
                await self._settle(passage, None)

    def _admit(self, name: str, scope: Scope, record: CircuitRecord) -> _Passage:
        if record.state == "closed" and record.failures == 0:
            # The common case: pybreaker would admit it and, on success,
            # change nothing. It is called only if the attempt fails.
            return _Passage(name, scope, record, "closed", None)
        now = self._clock()
        if record.state == "half-open":
            probing_until = (record.probe_at or 0) + self.reset_timeout
            if now < probing_until:
                raise CircuitOpen(f"the circuit of {name} is half-open: a probe is under way",
                                  retry_after=round(probing_until - now, 1))
            # The probe's worker vanished: the circuit may be probed again.
            record.state, record.opened_at = "open", now - self.reset_timeout
        calling = self._breaker(record).calling()
        try:
            calling.__enter__()
        except pybreaker.CircuitBreakerError:
            retry_at = (record.opened_at or now) + self.reset_timeout
            raise CircuitOpen(f"the circuit of {name} is open after repeated failures: {record.last_error}",
                              retry_after=round(max(0.0, retry_at - now), 1)) from None
        # pybreaker's ``calling()`` may have moved an open record on to half-open: this attempt is its probe.
        return _Passage(name, scope, record, record.state, calling)

    async def _settle(self, passage: _Passage, error: BaseException | None) -> None:
        """Finish pybreaker's call with the outcome and publish the record if
        it changed; on a lost compare-and-set, replay the outcome on the
        fresh record if it is still in the state the attempt ran under."""
        if passage.calling is None:  # admitted healthy, without pybreaker
            if error is None:
                return  # still healthy: nothing to write
            passage.calling = self._breaker(passage.record).calling()
            passage.calling.__enter__()  # a closed circuit admits: as it would have before the attempt
        before = passage.record.model_copy(deep=True)
        self._finish(passage.calling, passage.record, error)
        record = passage.record
        if record == before:
            return  # a success on a closed circuit with no failures: nothing to write
        async with self._writing.setdefault(passage.name, asyncio.Lock()):
            for _ in range(SWAP_TRIES):
                if record == before or await self._swap(passage.name, record):
                    if record.state != before.state:
                        log.warning("circuit %s is now %s (%s)", passage.name, record.state,
                                    record.last_error if error is not None else "the probe succeeded")
                    return
                await asyncio.sleep(random.uniform(0, 0.005))  # let the other process's write land
                try:
                    (before,) = await self.store.load(passage.name)
                except StoreUnavailable as lost:
                    log.warning("circuit %s: outcome not recorded: %s", passage.name, lost)
                    return
                if before.state != passage.admitted:
                    return  # another worker moved it on (opened, closed, reset): this outcome is stale
                record = before.model_copy(deep=True)
                calling = self._breaker(record).calling()
                calling.__enter__()
                self._finish(calling, record, error)
        log.warning("circuit %s: outcome dropped after %d conflicting writes", passage.name, SWAP_TRIES)

    async def _swap(self, name: str, record: CircuitRecord) -> bool:
        """A failed write counts as a lost race: the caller reloads (and, the
        store being down, gives up there)."""
        try:
            return await self.store.swap(name, record)
        except StoreUnavailable as error:
            log.warning("circuit %s: %s", name, error)
            return False

    def _finish(self, calling: AbstractContextManager[Any], record: CircuitRecord, error: BaseException | None) -> None:
        if error is None:
            calling.__exit__(None, None, None)
            return
        try:
            calling.__exit__(type(error), error, error.__traceback__)
        except BaseException as raised:
            if raised is not error:
                raise
        record.note_failure(self._clock(), str(error))

    # Which candidates to pass over (the ingress and hand-offs)

    def refusing_for(self, record: CircuitRecord) -> float:
        """Seconds this circuit will still refuse every attempt: 0 when it
        lets one through now (closed; half-open; open past its reset
        timeout, where the next attempt is the probe)."""
        if record.state != "open" or record.opened_at is None:
            return 0.0
        return max(0.0, record.opened_at + self.reset_timeout - self._clock())

    async def closed_in(self, routes: Sequence[Route]) -> list[float]:
        """For each candidate, seconds until both its circuits let an attempt
        through (0: now), read in one round trip; all 0 when the store cannot
        be read, as ``guard`` then lets attempts through too."""
        names = list(dict.fromkeys(name for route in routes for name in candidate_breakers(route)))
        if not names:
            return []
        try:
            records = dict(zip(names, await self.store.load(*names), strict=True))
        except StoreUnavailable as error:
            log.warning("circuits of the next candidates not checked: %s", error)
            return [0.0] * len(routes)
        return [max(self.refusing_for(records[name]) for name in candidate_breakers(route)) for route in routes]

    # What operators see

    async def health(self, providers: Iterable[str]) -> list[ProviderHealth]:
        """Every provider's circuit and its models' circuits, as stored."""
        now = self._clock()
        stored = await self.store.every()
        report: list[ProviderHealth] = []
        for provider in providers:
            own = stored.get(provider, CircuitRecord())
            models = {name.partition("/")[2]: record for name, record in stored.items()
                      if name.startswith(f"{provider}/")}
            report.append(ProviderHealth(provider, self._view(own, now),
                                         {model: self._view(record, now) for model, record in sorted(models.items())}))
        return report

    def _view(self, record: CircuitRecord, now: float) -> CircuitView:
        retry_at = None
        if record.state == "open" and record.opened_at is not None:
            retry_at = record.opened_at + self.reset_timeout
        elif record.state == "half-open" and record.probe_at is not None:
            retry_at = record.probe_at + self.reset_timeout
        return CircuitView(record.state, record.failures, record.recent_failures(now), record.last_error,
                           record.last_error_at, record.opened_at if record.state != "closed" else None, retry_at)

    async def reset(self, provider: str) -> None:
        """Close the circuits of ``provider`` and of all its models."""
        stored = await self.store.every()
        await self.store.reset(provider, *(name for name in stored if name.startswith(f"{provider}/")))
        log.warning("circuits of %s reset by an operator", provider)


@dataclass(frozen=True, slots=True)
class CircuitView:
    state: CircuitState
    failures: int  # consecutive, as pybreaker counts them
    recent_failures: int  # within schema.circuits.RECENT_WINDOW
    last_error: str | None
    last_error_at: float | None
    opened_at: float | None
    retry_at: float | None  # when a probe will be let through


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    provider: str
    circuit: CircuitView
    models: dict[str, CircuitView]

    @property
    def status(self) -> str:
        """``down``: the provider's circuit is not closed; ``degraded``: one
        of its models' is; else ``ok``."""
        if self.circuit.state != "closed":
            return "down"
        return "degraded" if any(view.state != "closed" for view in self.models.values()) else "ok"
