"""The in-process result bus for the embedded mode: a pub/sub of job inboxes
and cancellations. Same contract as the Redis one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Generic, TypeVar

from scheduler.result_bus import Inbox
from schema.jobs import JobMark, StreamEvent

V = TypeVar("V")

PRUNE_FLOOR = 10_000  # entries an expiring map holds before it first drops lapsed ones


class Expiring(Generic[V]):
    """Entries that lapse ``ttl`` seconds after they are put, as Redis keys
    do. Lapsed entries are dropped when the map has doubled since the last
    time: a job's entries live as long as its deadline, so at a few hundred
    jobs a second thousands are alive at once, and dropping on every put
    would scan them all each time."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, V]] = {}  # key -> (until when, monotonic; value)
        self._prune_at = PRUNE_FLOOR

    def get(self, key: str) -> V | None:
        kept = self._entries.get(key)
        return kept[1] if kept is not None and kept[0] > time.monotonic() else None

    def put(self, key: str, value: V, ttl: float) -> None:
        now = time.monotonic()
        if len(self._entries) >= self._prune_at:
            self._entries = {key: kept for key, kept in self._entries.items() if kept[0] > now}
            self._prune_at = max(PRUNE_FLOOR, 2 * len(self._entries))
        self._entries[key] = (now + ttl, value)


class MemoryResultBus:
    def __init__(self) -> None:
        self._inboxes: dict[str, Inbox] = {}
        self._marks: Expiring[JobMark] = Expiring()
        self._cancelled: Expiring[bool] = Expiring()
        self._listeners: set[asyncio.Queue[str]] = set()
        self._delivered: asyncio.Future[None] | None = None  # what ``post`` returns: always done

    async def marked(self, job_id: str) -> JobMark | None:
        return self._marks.get(job_id)

    async def mark(self, job_id: str, mark: JobMark, ttl: float, *,
                   publish: Sequence[StreamEvent] = (), to: str | None = None) -> JobMark | None:
        before = self._marks.get(job_id)
        if before is None or before.attempt <= mark.attempt:
            self._marks.put(job_id, mark, ttl)
            self._deliver(publish)  # no await between: atomic with the mark
        return before

    async def take(self, job_id: str, mark: JobMark, ttl: float) -> tuple[JobMark | None, bool]:
        return await self.mark(job_id, mark, ttl), await self.cancelled(job_id)

    async def cancel(self, job_id: str, ttl: float) -> None:
        self._cancelled.put(job_id, True, ttl)
        for listener in self._listeners:
            listener.put_nowait(job_id)

    async def cancelled(self, job_id: str) -> bool:
        return self._cancelled.get(job_id) is not None

    async def cancellations(self) -> AsyncIterator[str | None]:
        listener: asyncio.Queue[str] = asyncio.Queue()
        self._listeners.add(listener)
        try:
            while True:
                yield await listener.get()
        finally:
            self._listeners.discard(listener)

    async def subscribe(self, job_id: str) -> Inbox:
        inbox = Inbox(job_id, on_close=lambda box: self._inboxes.pop(box.job_id, None))
        self._inboxes[job_id] = inbox
        return inbox

    @property
    def reply_to(self) -> str | None:
        return None

    async def publish(self, *events: StreamEvent, to: str | None = None) -> None:
        self._deliver(events)

    def post(self, events: Sequence[StreamEvent], to: str | None = None) -> asyncio.Future[None]:
        self._deliver(events)  # delivered now: nothing to wait for
        if self._delivered is None:
            self._delivered = asyncio.get_running_loop().create_future()
            self._delivered.set_result(None)
        return self._delivered

    def _deliver(self, events: Sequence[StreamEvent]) -> None:
        inbox = self._inboxes.get(events[0]["job"]) if events else None
        if inbox is not None:  # like pub/sub: nobody listening, nothing kept
            for event in events:
                inbox.deliver(event)
