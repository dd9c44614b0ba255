"""Stopping the jobs whose clients left, in one worker process.

``CancelWatch`` reads the result bus's cancellations through one
subscription for the whole process (every pool in it shares the watch) and
stops the attempt of each job it names that a pool is running here. A job
is watched (``watching``) before its cancellation is checked (the pool
checks it as it takes the job, ``ResultBus.take``) and the ingress records
a cancellation before announcing it, so a cancel is never lost between the
two, whether it comes before the job was taken, while it is being taken, or
while it runs. When the subscription comes back after a gap, every running
job's cancellation is checked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from scheduler.result_bus import ResultBus
from schema.errors import BusUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


class JobCancelled(Exception):
    """The job's client left: its attempt was stopped (or never started)."""


class Watch:
    """One running job's side of the watch: the attempt it stops."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.fired = False
        self._attempt: asyncio.Task[Any] | None = None

    def stop(self) -> None:
        self.fired = True
        if self._attempt is not None:
            self._attempt.cancel()

    def attach(self, attempt: asyncio.Task[Any]) -> None:
        self._attempt = attempt
        if self.fired:
            attempt.cancel()

    async def run(self, work: Coroutine[Any, Any, T], *, cancelled: bool) -> T:
        """Run ``work`` (the job's attempts) unless the job was ``cancelled``
        (as checked after this watch began), and stop it when it is; raises
        ``JobCancelled`` then."""
        if cancelled:
            work.close()
            raise JobCancelled(self.job_id)
        attempt = asyncio.create_task(work, name=f"attempts of {self.job_id}")
        self.attach(attempt)
        try:
            return await attempt
        except asyncio.CancelledError:
            current = asyncio.current_task()
            # Only the watch cancelled the attempt; a cancel of this task
            # (deadline, shutdown) goes on as it came.
            if self.fired and attempt.cancelled() and (current is None or not current.cancelling()):
                raise JobCancelled(self.job_id) from None
            raise


class CancelWatch:
    def __init__(self, results: ResultBus) -> None:
        self._results = results
        self._running: dict[str, list[Watch]] = {}

    async def run(self) -> None:
        """Read cancellations until cancelled."""
        async for job_id in self._results.cancellations():
            if job_id is None:
                await self._check_running()
            else:
                self._stop(job_id)

    def _stop(self, job_id: str) -> None:
        for watch in self._running.get(job_id, ()):
            log.info("job %s: its client left; stopping it", job_id)
            watch.stop()

    async def _check_running(self) -> None:
        """After a gap in the announcements: ask about every running job."""
        for job_id in list(self._running):
            try:
                if await self._results.cancelled(job_id):
                    self._stop(job_id)
            except BusUnavailable as error:  # the next gap asks again
                log.warning("job %s: could not check for a cancellation (%s)", job_id, error.message)

    @contextmanager
    def watching(self, job_id: str) -> Iterator[Watch]:
        watch = Watch(job_id)
        self._running.setdefault(job_id, []).append(watch)
        try:
            yield watch
        finally:
            watches = self._running.get(job_id, [])
            if watch in watches:
                watches.remove(watch)
            if not watches:
                self._running.pop(job_id, None)
