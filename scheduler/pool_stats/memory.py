"""Pool statistics in this process (embedded mode)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from scheduler.pool_stats import PoolCounts, WorkerBeat, live_beats


class MemoryPoolStats:
    def __init__(self) -> None:
        self._depth: dict[str, dict[int, int]] = {}
        self._beats: dict[str, dict[str, WorkerBeat]] = {}
        self._seen: dict[str, float] = {}

    async def count(self, deltas: Mapping[tuple[str, int], int]) -> None:
        for (provider, priority), delta in deltas.items():
            depth = self._depth.setdefault(provider, {})
            depth[priority] = depth.get(priority, 0) + delta

    async def beat(self, beat: WorkerBeat) -> None:
        self._beats.setdefault(beat.provider, {})[beat.worker] = beat
        self._seen[beat.provider] = time.time()

    async def leave(self, provider: str, worker: str) -> None:
        self._beats.get(provider, {}).pop(worker, None)

    async def read(self, provider: str) -> PoolCounts:
        beats = self._beats.get(provider, {})
        live = live_beats(list(beats.values()), time.time())
        for gone in set(beats) - {beat.worker for beat in live}:
            del beats[gone]
        return PoolCounts(dict(self._depth.get(provider, {})), live, self._seen.get(provider))

    async def correct(self, provider: str, excess: dict[int, int]) -> None:
        await self.count({(provider, priority): -count for priority, count in excess.items()})
