"""Batches in the database: their rows, their lines and their results.

Every step of a batch is a short statement of its own (SQLite embedded has
one connection, shared with settlement): nothing here holds a connection
while it waits for anything else. A batch's progress lives only here, so
any orchestrator, after any restart, carries on where the last one left.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schema.batches import ACTIVE_STATUSES, BatchApi, BatchStatus
from schema.tables import batch_lines, batch_results, batches

OUTCOMES = ("succeeded", "errored", "expired", "canceled")
RESULT_PAGE = 500  # result rows read per statement when a results file streams


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch's row."""

    id: str
    api: BatchApi
    account_id: int
    key_id: int
    endpoint: str
    input_file_id: str | None
    status: BatchStatus
    metadata: dict[str, Any] | None
    errors: list[dict[str, Any]] | None
    total: int
    released: int
    succeeded: int
    errored: int
    expired: int
    canceled: int
    created_at: float
    expires_at: float
    in_progress_at: float | None
    finalizing_at: float | None
    completed_at: float | None
    failed_at: float | None
    expired_at: float | None
    cancelling_at: float | None
    cancelled_at: float | None

    @property
    def finished(self) -> int:
        """Lines with a result."""
        return self.succeeded + self.errored + self.expired + self.canceled

    @property
    def in_flight(self) -> int:
        """Lines released whose result has not come (a line given its result
        without running, refused or closed, counts as released)."""
        return self.released - self.finished

    @classmethod
    def of(cls, row: Any) -> Batch:
        fields = dict(row._mapping)
        for internal in ("lease_until", "chain", "stepped_at"):
            fields.pop(internal, None)
        fields["metadata"] = orjson.loads(fields["metadata"]) if fields["metadata"] else None
        fields["errors"] = orjson.loads(fields["errors"]) if fields["errors"] else None
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class Line:
    line: int
    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Result:
    line: int
    custom_id: str
    job_id: str | None
    outcome: str
    body: dict[str, Any]


def result_row(batch_id: str, line: int, custom_id: str, job_id: str | None, outcome: str,
               body: dict[str, Any]) -> dict[str, Any]:
    """A line's result as ``record_results`` takes it."""
    return {"batch_id": batch_id, "line": line, "custom_id": custom_id, "job_id": job_id, "outcome": outcome,
            "body": orjson.dumps(body).decode()}


def new_batch_id(api: BatchApi) -> str:
    return f"{'batch' if api == 'openai' else 'msgbatch'}_{uuid.uuid4().hex}"


async def record_results(connection: AsyncConnection, rows: list[dict[str, Any]]) -> int:
    """Insert line results (a line's first result stands: a late copy is
    ignored) and count the new ones into their batches; how many were new.
    Rows: ``batch_id, line, custom_id, job_id, outcome, body`` (JSON text)."""
    if not rows:
        return 0
    new = (await connection.execute(_insert_results(connection.dialect.name), rows)).all()
    counts: dict[str, Counter[str]] = {}
    for batch_id, outcome in new:
        counts.setdefault(batch_id, Counter())[outcome] += 1
    if counts:
        await connection.execute(_COUNT, [{"batch": batch_id, **{f"add_{name}": counted[name] for name in OUTCOMES}}
                                          for batch_id, counted in counts.items()])
    return len(new)


@functools.cache
def _insert_results(dialect: str) -> Any:
    """Built once per dialect: the insert that keeps a line's first result."""
    build = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (build(batch_results).on_conflict_do_nothing(index_elements=["batch_id", "line"])
            .returning(batch_results.c.batch_id, batch_results.c.outcome))


_COUNT = update(batches).where(batches.c.id == bindparam("batch")).values(
    {name: batches.c[name] + bindparam(f"add_{name}") for name in OUTCOMES})


class BatchStore:
    """Batches of one database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, *, api: BatchApi, account_id: int, key_id: int, endpoint: str,
                     input_file_id: str | None, metadata: dict[str, Any] | None, window: float,
                     status: BatchStatus = "validating") -> Batch:
        now = time.time()
        batch_id = new_batch_id(api)
        async with self.engine.begin() as connection:
            await connection.execute(insert(batches).values(
                id=batch_id, api=api, account_id=account_id, key_id=key_id, endpoint=endpoint,
                input_file_id=input_file_id, status=status,
                metadata=orjson.dumps(metadata).decode() if metadata else None, created_at=now,
                expires_at=now + window))
        found = await self.get(batch_id)
        assert found is not None
        return found

    async def get(self, batch_id: str, account_id: int | None = None) -> Batch | None:
        """The batch; None if absent or (with ``account_id``) another account's."""
        query = select(batches).where(batches.c.id == batch_id)
        if account_id is not None:
            query = query.where(batches.c.account_id == account_id)
        async with self.engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return Batch.of(row) if row is not None else None

    async def page(self, account_id: int, api: BatchApi, *, after: str | None, before: str | None,
                   limit: int) -> tuple[list[Batch], bool]:
        """The account's batches, newest first, after (older than) or before
        (newer than) the named one; and whether more lie beyond the page."""
        query = select(batches).where(batches.c.account_id == account_id, batches.c.api == api)
        async with self.engine.connect() as connection:
            for anchor, older in ((after, True), (before, False)):
                if anchor is None:
                    continue
                row = (await connection.execute(select(batches.c.created_at, batches.c.id).where(
                    batches.c.id == anchor, batches.c.account_id == account_id))).first()
                if row is None:
                    continue
                key = (row.created_at, row.id)
                query = query.where(_older(key) if older else ~_older(key) & (batches.c.id != anchor))
            newest_first = before is None
            order = (batches.c.created_at.desc(), batches.c.id.desc()) if newest_first else (
                batches.c.created_at, batches.c.id)
            rows = (await connection.execute(query.order_by(*order).limit(limit + 1))).all()
        found = [Batch.of(row) for row in rows[:limit]]
        return (found if newest_first else found[::-1]), len(rows) > limit

    async def add_lines(self, batch_id: str, lines: Sequence[Line]) -> None:
        if not lines:
            return
        async with self.engine.begin() as connection:
            await connection.execute(insert(batch_lines), [
                {"batch_id": batch_id, "line": line.line, "custom_id": line.custom_id,
                 "body": orjson.dumps(line.body).decode()} for line in lines])
            # A long validation is alive: it is not taken for a lost one.
            await connection.execute(update(batches).where(batches.c.id == batch_id).values(stepped_at=time.time()))

    async def chain_of(self, batch_id: str) -> str | None:
        async with self.engine.connect() as connection:
            chain: str | None = (await connection.execute(
                select(batches.c.chain).where(batches.c.id == batch_id))).scalar()
        return chain

    async def drop_lines(self, batch_id: str) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(batch_lines.delete().where(batch_lines.c.batch_id == batch_id))

    async def lines(self, batch_id: str, start: int, count: int) -> list[Line]:
        """Up to ``count`` lines from number ``start`` on, in order, leaving
        out those with a result already."""
        done = select(batch_results.c.line).where(batch_results.c.batch_id == batch_id,
                                                   batch_results.c.line == batch_lines.c.line).exists()
        query = (select(batch_lines.c.line, batch_lines.c.custom_id, batch_lines.c.body)
                 .where(batch_lines.c.batch_id == batch_id, batch_lines.c.line >= start, ~done)
                 .order_by(batch_lines.c.line).limit(count))
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [Line(row.line, row.custom_id, orjson.loads(row.body)) for row in rows]

    async def move(self, batch_id: str, to: BatchStatus, *, when: Sequence[BatchStatus],
                   **values: Any) -> bool:
        """Move the batch to status ``to`` if it is in one of ``when``
        (stamping ``<to>_at``); whether it moved."""
        stamp = {f"{to}_at": time.time()} if f"{to}_at" in batches.c else {}
        async with self.engine.begin() as connection:
            moved = await connection.execute(update(batches).where(
                batches.c.id == batch_id, batches.c.status.in_(when)).values(status=to, **stamp, **values))
        return moved.rowcount == 1

    async def rewind(self, batch_id: str) -> None:
        """Release again every line without a result (their jobs were lost
        with an embedded gateway's in-process queue)."""
        async with self.engine.begin() as connection:
            await connection.execute(update(batches).where(batches.c.id == batch_id).values(released=0))

    async def released(self, batch_id: str, before: int, after: int) -> bool:
        """Move the release cursor from ``before`` to ``after``; False if
        another orchestrator moved it meanwhile."""
        async with self.engine.begin() as connection:
            moved = await connection.execute(update(batches).where(
                batches.c.id == batch_id, batches.c.released == before).values(released=after))
        return moved.rowcount == 1

    async def lease(self, batch_id: str, chain: str, seconds: float) -> bool:
        """Hold the batch for ``seconds`` for a step of ``chain``; False if
        another chain has it, or a step of this one holds it now."""
        now = time.time()
        async with self.engine.begin() as connection:
            taken = await connection.execute(update(batches).where(
                batches.c.id == batch_id, batches.c.chain == chain, batches.c.lease_until <= now,
            ).values(lease_until=now + seconds, stepped_at=now))
        return taken.rowcount == 1

    async def new_chain(self, batch_id: str, *, stale_after: float | None) -> str | None:
        """Give the batch a new chain of steps (the old one ends at its next
        step), if its last step is older than ``stale_after`` seconds (None:
        whatever it is); the chain, or None if the batch is stepping."""
        chain = uuid.uuid4().hex
        query = update(batches).where(batches.c.id == batch_id, batches.c.status.in_(ACTIVE_STATUSES))
        if stale_after is not None:
            query = query.where(or_(batches.c.stepped_at.is_(None), batches.c.stepped_at < time.time() - stale_after))
        async with self.engine.begin() as connection:
            moved = await connection.execute(query.values(chain=chain, stepped_at=time.time()))
        return chain if moved.rowcount == 1 else None

    async def unlease(self, batch_id: str) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(update(batches).where(batches.c.id == batch_id).values(lease_until=0))

    async def census(self) -> tuple[dict[str, int], dict[str, int]]:
        """Batches by status, and every batch's lines by outcome."""
        async with self.engine.connect() as connection:
            statuses = (await connection.execute(
                select(batches.c.status, func.count()).group_by(batches.c.status))).all()
            sums = (await connection.execute(
                select(*(func.coalesce(func.sum(batches.c[name]), 0) for name in OUTCOMES)))).one()
        return {status: int(count) for status, count in statuses}, dict(zip(OUTCOMES, map(int, sums), strict=True))

    async def active(self) -> list[str]:
        """Every batch not yet ended, oldest first."""
        async with self.engine.connect() as connection:
            rows = (await connection.execute(select(batches.c.id).where(
                batches.c.status.in_(ACTIVE_STATUSES)).order_by(batches.c.created_at))).all()
        return [row.id for row in rows]

    async def in_flight(self, account_id: int) -> int:
        """Lines of the account's active batches released and not yet finished."""
        finished = batches.c.succeeded + batches.c.errored + batches.c.expired + batches.c.canceled
        async with self.engine.connect() as connection:
            value = (await connection.execute(select(func.coalesce(func.sum(
                batches.c.released - finished), 0)).where(
                batches.c.account_id == account_id, batches.c.status.in_(ACTIVE_STATUSES)))).scalar_one()
        return max(0, int(value))

    async def record(self, rows: list[dict[str, Any]]) -> int:
        async with self.engine.begin() as connection:
            return await record_results(connection, rows)

    async def close_unreleased(self, batch: Batch, outcome: str, body: dict[str, Any]) -> int:
        """Give every line not yet released the result ``outcome``, a page at
        a time, moving the release cursor past each page; how many."""
        total, start = 0, batch.released
        while lines := await self.lines(batch.id, start, RESULT_PAGE):
            after = lines[-1].line + 1
            async with self.engine.begin() as connection:
                total += await record_results(connection, [
                    result_row(batch.id, line.line, line.custom_id, None, outcome, body) for line in lines])
                await connection.execute(update(batches).where(batches.c.id == batch.id).values(released=after))
            start = after
        return total

    async def results(self, batch_id: str, outcomes: Sequence[str] | None = None) -> AsyncIterator[Result]:
        """The batch's results in line order, a page per statement."""
        start = 0
        while True:
            query = select(batch_results).where(batch_results.c.batch_id == batch_id, batch_results.c.line >= start)
            if outcomes is not None:
                query = query.where(batch_results.c.outcome.in_(outcomes))
            async with self.engine.connect() as connection:
                rows = (await connection.execute(query.order_by(batch_results.c.line).limit(RESULT_PAGE))).all()
            for row in rows:
                yield Result(row.line, row.custom_id, row.job_id, row.outcome, orjson.loads(row.body or b"null"))
            if len(rows) < RESULT_PAGE:
                return
            start = rows[-1].line + 1


def _older(key: tuple[float, str]) -> Any:
    created_at, batch_id = key
    return or_(batches.c.created_at < created_at, and_(batches.c.created_at == created_at, batches.c.id < batch_id))

