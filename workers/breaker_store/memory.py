"""Circuit breaker state in this process (embedded mode)."""

from __future__ import annotations

from schema.circuits import CircuitRecord


class MemoryBreakerStore:
    def __init__(self) -> None:
        self._records: dict[str, CircuitRecord] = {}

    async def load(self, *breakers: str) -> list[CircuitRecord]:
        return [self._records[name].model_copy(deep=True) if name in self._records else CircuitRecord()
                for name in breakers]

    async def swap(self, breaker: str, record: CircuitRecord) -> bool:
        stored = self._records.get(breaker)
        if (stored.version if stored is not None else 0) != record.version:
            return False
        self._records[breaker] = record.model_copy(update={"version": record.version + 1}, deep=True)
        return True

    async def every(self) -> dict[str, CircuitRecord]:
        return {name: record.model_copy(deep=True) for name, record in self._records.items()}

    async def reset(self, *breakers: str) -> None:
        for name in breakers:
            self._records.pop(name, None)
