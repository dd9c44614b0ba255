"""Where circuit breakers keep their state: in this process (embedded mode,
``workers.breaker_store.memory``) or in Redis, shared by every worker and
ingress (distributed mode, ``workers.breaker_store.redis``).

A store loads records and writes one back only if nobody wrote it since it
was loaded (compare-and-set on ``CircuitRecord.version``), so workers that
judge the same provider at once never lose each other's failures. Every
call is one round trip, never a blocking one: pybreaker's own Redis storage
blocks the event loop, so the state machine runs on a loaded copy instead
(``workers.breakers``). A store that cannot be reached raises
``schema.errors.StoreUnavailable``.
"""

from __future__ import annotations

from typing import Protocol

from schema.circuits import CircuitRecord


class BreakerStore(Protocol):
    async def load(self, *breakers: str) -> list[CircuitRecord]:
        """The records of these breakers, a fresh closed one for each never written."""
        ...

    async def swap(self, breaker: str, record: CircuitRecord) -> bool:
        """Store ``record`` if the stored version is still ``record.version``
        (then the stored one is ``version + 1``); False if another write won."""
        ...

    async def every(self) -> dict[str, CircuitRecord]:
        """Every breaker that has a record."""
        ...

    async def reset(self, *breakers: str) -> None:
        """Forget these breakers: they are closed, with no failures."""
        ...
