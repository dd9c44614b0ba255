"""The in-process result bus for the embedded mode: a pub/sub of job inboxes
and cancellations. Same contract as the Redis one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

from scheduler.result_bus import Inbox
from schema.jobs import JobMark, StreamEvent


class MemoryResultBus:
    def __init__(self) -> None:
        self._inboxes: dict[str, Inbox] = {}
        self._marks: dict[str, tuple[float, JobMark]] = {}
        self._cancelled: dict[str, float] = {}  # job id -> until when (monotonic)
        self._listeners: set[asyncio.Queue[str]] = set()

    async def marked(self, job_id: str) -> JobMark | None:
        kept = self._marks.get(job_id)
        return kept[1] if kept and kept[0] > time.monotonic() else None

    async def mark(self, job_id: str, mark: JobMark, ttl: float, *,
                   publish: Sequence[StreamEvent] = (), to: str | None = None) -> JobMark | None:
        now = time.monotonic()
        if len(self._marks) > 10_000:
            self._marks = {job: kept for job, kept in self._marks.items() if kept[0] > now}
        before = await self.marked(job_id)
        if before is None or before.attempt <= mark.attempt:
            self._marks[job_id] = (now + ttl, mark)
            self._deliver(publish)  # no await between: atomic with the mark
        return before

    async def take(self, job_id: str, mark: JobMark, ttl: float) -> tuple[JobMark | None, bool]:
        return await self.mark(job_id, mark, ttl), await self.cancelled(job_id)

    async def cancel(self, job_id: str, ttl: float) -> None:
        now = time.monotonic()
        if len(self._cancelled) > 10_000:
            self._cancelled = {job: until for job, until in self._cancelled.items() if until > now}
        self._cancelled[job_id] = now + ttl
        for listener in self._listeners:
            listener.put_nowait(job_id)

    async def cancelled(self, job_id: str) -> bool:
        return self._cancelled.get(job_id, 0.0) > time.monotonic()

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

    def _deliver(self, events: Sequence[StreamEvent]) -> None:
        inbox = self._inboxes.get(events[0]["job"]) if events else None
        if inbox is not None:  # like pub/sub: nobody listening, nothing kept
            for event in events:
                inbox.deliver(event)
