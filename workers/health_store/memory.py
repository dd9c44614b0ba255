"""Provider health in this process (embedded mode).

The memory store is shared by the ingress's event loop and the prober's
(dramatiq runs async actors on a loop of its own, in another thread), so it
takes a thread lock around each operation, none of which waits on I/O.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable

from schema.health import HEALTH_SOURCES, OUTCOMES_KEPT, HealthSource, Outcome
from workers.health_store import Observed, Recent, fresh


class MemoryHealthStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: dict[tuple[str, HealthSource], deque[Outcome]] = {}
        self._round_until = 0.0
        self._round_chain = ""
        self._successors: dict[tuple[str, int], float] = {}  # claimed -> until when

    async def record(self, outcomes: Iterable[Observed]) -> None:
        with self._lock:
            for provider, source, outcome in outcomes:
                self._outcomes.setdefault((provider, source), deque(maxlen=OUTCOMES_KEPT)).appendleft(outcome)

    async def recent(self, providers: Iterable[str]) -> Recent:
        now = time.time()
        with self._lock:
            return {provider: {source: fresh(self._outcomes.get((provider, source), ()), now)
                               for source in HEALTH_SOURCES} for provider in providers}

    async def claim_round(self, chain: str, seconds: float) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._round_until:
                return chain == self._round_chain
            self._round_until, self._round_chain = now + seconds, chain
            return True

    async def claim_successor(self, chain: str, number: int, seconds: float) -> bool:
        now = time.monotonic()
        with self._lock:
            self._successors = {claimed: until for claimed, until in self._successors.items() if until > now}
            if (chain, number) in self._successors:
                return False
            self._successors[chain, number] = now + seconds
            return True
