"""A job's in-process inbox, shared by both result-bus implementations.

The bus reader never blocks on a slow client: each job gets a bounded buffer,
and a job whose client cannot keep up fails alone and cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from schema.errors import StreamBroken
from schema.jobs import StreamEvent

INBOX_SIZE = 4096


class Inbox:
    def __init__(self, job_id: str, on_close: Callable[[Inbox], object]) -> None:
        self.job_id = job_id
        self._events: asyncio.Queue[StreamEvent | None] = asyncio.Queue(INBOX_SIZE)
        self._failure: str | None = None
        self._on_close = on_close
        self._closed = False

    def deliver(self, event: StreamEvent) -> None:
        if self._failure is not None:
            return
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            self._failure = "the client is not reading the stream fast enough"

    def fail(self, reason: str) -> None:
        """End the stream with ``StreamBroken`` (the bus lost the subscription)."""
        if self._failure is None:
            self._failure = reason
        # A full inbox wakes its reader anyway, which then sees the failure.
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(None)

    async def next(self, timeout: float) -> StreamEvent:
        if self._failure is not None:
            raise StreamBroken(f"result stream interrupted: {self._failure}")
        try:
            event = self._events.get_nowait()
        except asyncio.QueueEmpty:
            event = await asyncio.wait_for(self._events.get(), timeout)
        if event is None:
            raise StreamBroken(f"result stream interrupted: {self._failure}")
        return event

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            result = self._on_close(self)
            if asyncio.iscoroutine(result):
                await result
