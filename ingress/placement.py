"""Where a new job starts: the first of its candidates, in order, whose
circuits let it through and whose pool admits it (``scheduler.admission``).

The job starts at that candidate's attempt, so its worker, its marks and
its usage event name that provider, and failover goes on from the
candidates after it. A candidate whose circuit is open is passed over
without a queue or a worker seeing the job; half-open circuits (or open
ones past their reset timeout, whose next attempt is the probe) count as
usable. When every candidate is refused, the client gets the refusal with
the shortest ``retry-after``: 503 ``queue_full``, ``no_workers`` or
``circuit_open``.

``CircuitWatch`` keeps each process's copy of the shared circuits (at most
``max_age`` old), so most requests read none; a refusal of every candidate
is decided on circuits read just then. When the circuits cannot be read
(or a read takes longer than ``READ_TIMEOUT``), they count as closed, as
they do for workers (``workers.breakers``), and are not read again for
``max_age``: a store in trouble never holds requests up for long.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence

from scheduler.admission import NoWorkers, PoolWatch, QueueFull
from schema.circuits import CircuitRecord
from schema.errors import CircuitOpen, ServiceUnavailable, StoreUnavailable
from schema.jobs import Job, Route
from workers.breakers import Breakers, candidate_breakers

log = logging.getLogger(__name__)

FRESH = 0.05  # seconds: circuits read this recently count as read just now
READ_TIMEOUT = 0.25  # seconds a read of the circuits may take before they count as closed


class CircuitWatch:
    """This process's copy of the shared circuit records that jobs' candidates meet."""

    def __init__(self, breakers: Breakers, *, max_age: float = 0.5) -> None:
        self._breakers = breakers
        self._max_age = max_age
        self._records: dict[str, tuple[float, CircuitRecord]] = {}  # breaker -> (read at, record)
        self._reading: dict[frozenset[str], asyncio.Task[None]] = {}
        self._blind_until: float | None = None  # the store could not be read: not before then

    async def closed_in(self, routes: Sequence[Route], *, max_age: float | None = None) -> list[float]:
        """For each candidate, seconds until its circuits let an attempt
        through (0: now), from records at most ``max_age`` seconds old."""
        limit = self._max_age if max_age is None else max_age
        now = time.monotonic()
        if self._blind_until is not None and now < self._blind_until:
            return [0.0] * len(routes)
        stale = frozenset(name for route in routes for name in candidate_breakers(route)
                          if name not in self._records or now - self._records[name][0] > limit)
        if stale and not await self._read(stale):
            return [0.0] * len(routes)
        return [max(self._refusing_for(name) for name in candidate_breakers(route)) for route in routes]

    def _refusing_for(self, name: str) -> float:
        kept = self._records.get(name)  # forgotten meanwhile: read again next time
        return self._breakers.refusing_for(kept[1]) if kept is not None else 0.0

    def forget(self, routes: Iterable[Route]) -> None:
        """Read these candidates' circuits again next time: a job of theirs
        just failed or failed over, which may have moved them."""
        for route in routes:
            for name in candidate_breakers(route):
                self._records.pop(name, None)

    def forget_provider(self, provider: str) -> None:
        """After an operator reset the provider's circuits."""
        for name in [name for name in self._records if name == provider or name.startswith(f"{provider}/")]:
            del self._records[name]

    async def _read(self, names: frozenset[str]) -> bool:
        """Load ``names`` (one read at a time per set, shared by every
        request that needs it); False when the store cannot be read."""
        reading = self._reading.get(names)
        if reading is None:
            reading = asyncio.create_task(self._load(names), name="circuits")
            self._reading[names] = reading
            reading.add_done_callback(lambda _: self._reading.pop(names, None))
        try:
            await asyncio.shield(reading)
        except StoreUnavailable as error:
            if self._blind_until is None:
                log.warning("circuits unreadable (%s): every candidate counts as closed", error)
            self._blind_until = time.monotonic() + self._max_age
            return False
        if self._blind_until is not None:
            self._blind_until = None
            log.warning("circuits readable again")
        return True

    async def _load(self, names: frozenset[str]) -> None:
        ordered = sorted(names)
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                records = await self._breakers.store.load(*ordered)
        except TimeoutError:
            raise StoreUnavailable(f"no answer within {READ_TIMEOUT:g}s") from None
        read_at = time.monotonic()
        self._records.update((name, (read_at, record)) for name, record in zip(ordered, records, strict=True))


async def place(job: Job, circuits: CircuitWatch, pools: PoolWatch, queue_deadline: float) -> int:
    """The attempt (index into ``job.routes``) the job starts at; raises
    the refusal with the shortest ``retry-after`` when every candidate is
    refused."""
    refusals: list[ServiceUnavailable] = []
    passed_over: list[int] = []  # by their circuits, as last read
    for attempt, wait in enumerate(await circuits.closed_in(job.routes)):
        if wait > 0:
            passed_over.append(attempt)
        elif await _admitted(job, attempt, pools, queue_deadline, refusals):
            return attempt
    if passed_over:
        # Every candidate refused: decide on circuits read just now.
        routes = [job.routes[attempt] for attempt in passed_over]
        for attempt, wait in zip(passed_over, await circuits.closed_in(routes, max_age=FRESH), strict=True):
            if wait > 0:
                route = job.routes[attempt]
                refusals.append(CircuitOpen(
                    f"provider {route.provider!r} is not called for {route.upstream_model!r} while its circuit is "
                    f"open after repeated failures; it is tried again in {wait:.1f}s",
                    retry_after=max(0.1, round(wait, 1))))
            elif await _admitted(job, attempt, pools, queue_deadline, refusals):
                return attempt
    raise min(refusals, key=lambda refusal: refusal.retry_after or 0.0)


async def _admitted(job: Job, attempt: int, pools: PoolWatch, queue_deadline: float,
                    refusals: list[ServiceUnavailable]) -> bool:
    try:
        await pools.admit(job.routes[attempt].provider, job.priority, queue_deadline)
    except (QueueFull, NoWorkers) as refused:
        refusals.append(refused)
        return False
    return True
