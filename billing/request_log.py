"""The request log: the settled jobs (``usage_records``), newest first,
filtered and paged, with how each ended; and its counts by outcome and by
model over the same filters. Reads are bounded by a time window on the
indexed ``finished_at``.

Request bodies are not stored: a job's payload lives only in its queue
message and in the worker serving it, and the log holds what settlement
records (ids, provider, model, tokens, cost, outcome).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.history import Page
from schema.tables import usage_records

_FAILED = usage_records.c.status >= 400


@dataclass(frozen=True, slots=True)
class LogFilter:
    since: float  # unix seconds, inclusive
    until: float | None = None  # exclusive
    provider: str | None = None
    model: str | None = None
    account_id: int | None = None
    key_id: int | None = None
    outcome: str | None = None  # "ok" | "error"


@dataclass(frozen=True, slots=True)
class LogPage:
    rows: list[dict[str, Any]]
    next_cursor: int | None


def _filtered(statement: Select[*tuple[Any, ...]], chosen: LogFilter) -> Select[*tuple[Any, ...]]:
    statement = statement.where(usage_records.c.finished_at >= chosen.since)
    if chosen.until is not None:
        statement = statement.where(usage_records.c.finished_at < chosen.until)
    for name in ("provider", "model", "account_id", "key_id"):
        value = getattr(chosen, name)
        if value is not None:
            statement = statement.where(usage_records.c[name] == value)
    if chosen.outcome == "error":
        statement = statement.where(_FAILED)
    elif chosen.outcome == "ok":
        # A job whose outcome was not reported (none) succeeded as far as anyone knows.
        statement = statement.where(func.coalesce(usage_records.c.status, 200) < 400)
    return statement


_COLUMNS = ("id", "job_id", "account_id", "key_id", "provider", "model", "input_tokens", "output_tokens", "images",
            "reported", "cost", "finished_at", "status", "error_type", "latency_ms", "ttft_ms", "queue_ms")


async def requests(engine: AsyncEngine, chosen: LogFilter, page: Page) -> LogPage:
    statement = _filtered(select(*(usage_records.c[name] for name in _COLUMNS)), chosen)
    if page.cursor is not None:
        statement = statement.where(usage_records.c.id < page.cursor)
    statement = statement.order_by(usage_records.c.id.desc()).limit(page.limit + 1).offset(page.offset)
    async with engine.connect() as connection:
        rows = [dict(row) for row in (await connection.execute(statement)).mappings()]
    more = len(rows) > page.limit
    rows = rows[:page.limit]
    return LogPage(rows, rows[-1]["id"] if more else None)


async def counts(engine: AsyncEngine, chosen: LogFilter) -> dict[str, Any]:
    """How many jobs, how many failed, and how many ended in each status."""
    status = func.coalesce(usage_records.c.status, 200).label("status")
    statement = _filtered(select(status, func.count().label("n")), chosen).group_by(status).order_by(status)
    async with engine.connect() as connection:
        by_status = {int(row.status): int(row.n) for row in await connection.execute(statement)}
    return {"total": sum(by_status.values()), "errors": sum(n for code, n in by_status.items() if code >= 400),
            "by_status": {str(code): n for code, n in by_status.items()}}


async def models(engine: AsyncEngine, chosen: LogFilter) -> list[dict[str, Any]]:
    """The models in the log, busiest first."""
    requests_ = func.count().label("requests")
    statement = _filtered(select(
        usage_records.c.model, requests_,
        func.sum(case((_FAILED, 1), else_=0)).label("errors"),
        func.max(usage_records.c.finished_at).label("last_at"),
    ), chosen).group_by(usage_records.c.model).order_by(requests_.desc(), usage_records.c.model)
    async with engine.connect() as connection:
        return [{"model": row.model, "requests": int(row.requests), "errors": int(row.errors or 0),
                 "last_at": row.last_at} for row in await connection.execute(statement)]
