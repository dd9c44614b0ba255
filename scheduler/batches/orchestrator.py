"""A batch's life, one short step at a time: validate and expand its input,
release its lines gradually as jobs, close what the window or a
cancellation leaves, and end it once every line has a result.

Steps are idempotent and keep nothing in memory: a batch's progress is its
row (``scheduler.batches.store``), so a step redone after a crash, or by
another orchestrator, carries on from there. Lines are released in order,
at most ``batch_max_in_flight`` of a batch and ``batch_account_max_in_flight``
of an account at once, so a 50,000-line batch never floods a queue. A line
released twice (its orchestrator died between queueing its job and moving
the release cursor) is one job: its id is the line's (``line_job_id``).

Results are not collected here: each line's job settles with its answer
(``billing.batch_results``), and a step only counts them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from scheduler.batches.store import Batch, BatchStore, Line, result_row
from scheduler.batches.validation import OpenAIFile, split_lines
from schema.batches import BatchStatus
from schema.settings import Settings

log = logging.getLogger(__name__)

LEASE = 10.0  # seconds a step may hold its batch: a step takes well under one, and a step that died holds it this long
EXPAND_ROWS = 500  # lines inserted per statement while a file is expanded


@dataclass(frozen=True, slots=True)
class Refused:
    """A line that was not queued: the error its result records."""

    line: Line
    error: dict[str, Any]


class LineRelease(Protocol):
    """Turns lines into queued jobs (``ingress.batch_release``)."""

    async def release(self, batch: Batch, lines: list[Line]) -> tuple[int, list[Refused]]:
        """Queue the lines' jobs, in order; how many of ``lines`` were dealt
        with (queued or refused: fewer when every candidate of the next one
        is unavailable for now), and the refused ones."""
        ...


FileReader = Callable[[str], AsyncIterator[bytes]]


def expired_error() -> dict[str, Any]:
    return {"status": 408, "message": "This request could not be executed before the completion window expired.",
            "type": "timeout_error", "code": "batch_expired", "retry_after": None}


def cancelled_error() -> dict[str, Any]:
    return {"status": 400, "message": "This request was not executed because the batch was cancelled.",
            "type": "invalid_request_error", "code": "batch_cancelled", "retry_after": None}


class Orchestrator:
    """Runs every batch of one database."""

    def __init__(self, store: BatchStore, release: LineRelease, read_file: FileReader, settings: Settings) -> None:
        self.store = store
        self._release = release
        self._read_file = read_file
        self._settings = settings

    async def validate(self, batch_id: str) -> bool:
        """Check an OpenAI batch's input file and expand it into lines; a
        file with errors fails the batch. Whether the batch is now in progress."""
        batch = await self.store.get(batch_id)
        if batch is None or batch.status != "validating":
            return batch is not None and batch.status == "in_progress"
        if batch.input_file_id is None:  # Anthropic's: its requests were checked and stored as it was made
            return await self.store.move(batch_id, "in_progress", when=("validating",))
        await self.store.drop_lines(batch_id)  # a validation redone after a crash starts over
        checker = OpenAIFile(batch.endpoint)
        pending: list[Line] = []
        async for number, raw in split_lines(self._read_file(batch.input_file_id)):
            line = checker.check(number, raw)
            if line is not None and not checker.findings.errors:
                pending.append(line)
                if len(pending) >= EXPAND_ROWS:
                    await self.store.add_lines(batch_id, pending)
                    pending = []
        findings = checker.findings
        if not findings.errors and checker.count == 0:
            findings.add("The file holds no requests", line=None, code="empty_file")
        if findings.errors:
            await self.store.drop_lines(batch_id)
            await self.store.move(batch_id, "failed", when=("validating",), errors=_errors_text(findings.errors))
            log.info("batch %s failed validation: %d errors", batch_id, len(findings.errors))
            return False
        await self.store.add_lines(batch_id, pending)
        moved = await self.store.move(batch_id, "in_progress", when=("validating",), total=checker.count)
        log.info("batch %s: %d requests, in progress", batch_id, checker.count)
        return moved

    async def run(self, batch_id: str, chain: str, *, interval: float, for_seconds: float) -> bool:
        """Steps of ``chain``, ``interval`` apart, for about ``for_seconds``;
        whether the chain goes on after them."""
        ends = time.monotonic() + for_seconds
        while await self.step(batch_id, chain):
            if time.monotonic() + interval >= ends:
                return True
            await asyncio.sleep(interval)
        return False

    async def step(self, batch_id: str, chain: str) -> bool:
        """One step of ``chain`` on the batch; whether the chain goes on."""
        if not await self.store.lease(batch_id, chain, LEASE):
            batch = await self.store.get(batch_id)
            # Another chain took over, or the batch ended: this chain ends.
            return (batch is not None and batch.status in ("in_progress", "cancelling")
                    and await self.store.chain_of(batch_id) == chain)
        try:
            return await self._step(batch_id)
        finally:
            await self.store.unlease(batch_id)

    async def _step(self, batch_id: str) -> bool:
        batch = await self.store.get(batch_id)
        if batch is None:
            return False
        if batch.status == "cancelling":
            await self.store.close_unreleased(batch, "canceled", cancelled_error())
            return not await self._end_if_done(batch_id, "cancelled", when=("cancelling",))
        if batch.status != "in_progress":
            return batch.status in ("validating", "finalizing")
        if time.time() >= batch.expires_at:
            await self.store.close_unreleased(batch, "expired", expired_error())
            return not await self._end_if_done(batch_id, "expired", when=("in_progress",))
        if batch.released < batch.total:
            await self._release_some(batch)
        return not await self._end_if_done(batch_id, "completed", when=("in_progress",))

    async def _release_some(self, batch: Batch) -> None:
        room = min(self._settings.batch_max_in_flight - max(0, batch.in_flight),
                   self._settings.batch_account_max_in_flight - await self.store.in_flight(batch.account_id))
        if room <= 0:
            return
        lines = await self.store.lines(batch.id, batch.released, room)
        if not lines:
            await self.store.released(batch.id, batch.released, batch.total)
            return
        done, refused = await self._release.release(batch, lines)
        if refused:
            await self.store.record([result_row(batch.id, item.line.line, item.line.custom_id, None, "errored",
                                                item.error) for item in refused])
        if done:
            cursor = lines[done - 1].line + 1
            if not await self.store.released(batch.id, batch.released, cursor):
                log.warning("batch %s: its release cursor moved under this step", batch.id)

    async def _end_if_done(self, batch_id: str, status: BatchStatus, *, when: tuple[BatchStatus, ...]) -> bool:
        batch = await self.store.get(batch_id)
        if batch is None or batch.finished < batch.total:
            return False
        if status == "completed":
            await self.store.move(batch_id, "finalizing", when=when)  # OpenAI shows it; the files are live already
            when = ("finalizing",)
        moved = await self.store.move(batch_id, status, when=when)
        if moved:
            log.info("batch %s %s: %d succeeded, %d errored, %d expired, %d cancelled", batch_id, status,
                     batch.succeeded, batch.errored, batch.expired, batch.canceled)
        return True

    async def cancel(self, batch_id: str, account_id: int) -> Batch | None:
        """Ask for the batch to stop: lines not yet released end ``canceled``;
        those in flight finish. None if there is no such batch."""
        batch = await self.store.get(batch_id, account_id)
        if batch is None:
            return None
        if batch.status == "validating":
            await self.store.move(batch_id, "cancelled", when=("validating",), cancelling_at=time.time())
        else:
            await self.store.move(batch_id, "cancelling", when=("in_progress",))
        return await self.store.get(batch_id, account_id)


def _errors_text(errors: list[dict[str, Any]]) -> str:
    return orjson.dumps(errors).decode()
