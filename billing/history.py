"""Read-only views of an account's history, newest first and paged: its usage
records with totals by model and by UTC day (``GET /user/usage``), and its
ledger entries (the operator's statement of an account)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, String, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import BindParameter, ColumnElement, Label

from schema.errors import AccountNotFound
from schema.tables import accounts, ledger_entries, ledger_transactions, usage_records


@dataclass(frozen=True, slots=True)
class Page:
    """``limit`` rows, after the row whose id is ``cursor`` or after skipping
    ``offset`` rows."""

    limit: int
    cursor: int | None = None
    offset: int = 0


@dataclass(frozen=True, slots=True)
class UsageFilter:
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    model: str | None = None
    key_id: int | None = None
    batch_id: str | None = None


@dataclass(frozen=True, slots=True)
class UsageRow:
    job_id: str
    created_at: datetime
    key_id: int
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    images: int
    reported: bool
    cost: int
    batch_id: str | None  # the batch whose line it was (none: a request)


@dataclass(frozen=True, slots=True)
class UsageTotal:
    group: str | None  # the model or the day; None for the grand total
    requests: int
    input_tokens: int
    output_tokens: int
    images: int
    cost: int


@dataclass(frozen=True, slots=True)
class UsageReport:
    rows: list[UsageRow]
    next_cursor: int | None  # set when more rows follow
    total: UsageTotal
    by_model: list[UsageTotal]
    by_day: list[UsageTotal]


@dataclass(frozen=True, slots=True)
class StatementEntry:
    id: int
    transaction_id: int
    kind: str
    reference: str
    memo: str | None
    bucket: str
    amount: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Statement:
    entries: list[StatementEntry]
    next_cursor: int | None


def stored_time(connection: AsyncConnection, moment: datetime) -> datetime | BindParameter[str]:
    """A bound to compare a ``DateTime`` column with, as the database stores it.

    SQLite keeps ``CURRENT_TIMESTAMP`` text in whole UTC seconds, compared as
    text: for whole-second values, ``t >= x`` and ``t < x`` are the same as
    against ``x`` rounded up to the second."""
    if connection.dialect.name != "sqlite":
        return moment
    seconds = math.ceil(moment.timestamp())
    return literal(datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S"), String())


def as_utc(value: datetime) -> datetime:
    """A stored time (naive UTC from SQLite, aware from PostgreSQL) as aware UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def usage_report(engine: AsyncEngine, account_id: int, where: UsageFilter, page: Page) -> UsageReport:
    async with engine.connect() as connection:
        conditions = [usage_records.c.account_id == account_id]
        if where.start is not None:
            conditions.append(usage_records.c.created_at >= stored_time(connection, where.start))
        if where.end is not None:
            conditions.append(usage_records.c.created_at < stored_time(connection, where.end))
        if where.model is not None:
            conditions.append(usage_records.c.model == where.model)
        if where.key_id is not None:
            conditions.append(usage_records.c.key_id == where.key_id)
        if where.batch_id is not None:
            conditions.append(usage_records.c.batch_id == where.batch_id)

        listed = select(usage_records).where(*conditions)
        if page.cursor is not None:
            listed = listed.where(usage_records.c.id < page.cursor)
        listed = listed.order_by(usage_records.c.id.desc()).offset(page.offset).limit(page.limit + 1)
        found = (await connection.execute(listed)).all()

        day = _utc_day(connection, usage_records.c.created_at)
        sums = (func.count(), func.coalesce(func.sum(usage_records.c.input_tokens), 0),
                func.coalesce(func.sum(usage_records.c.output_tokens), 0),
                func.coalesce(func.sum(usage_records.c.images), 0),
                func.coalesce(func.sum(usage_records.c.cost), 0))
        total = (await connection.execute(select(*sums).where(*conditions))).one()
        by_model = await connection.execute(
            select(usage_records.c.model, *sums).where(*conditions).group_by(usage_records.c.model)
            .order_by(usage_records.c.model)
        )
        by_day = await connection.execute(select(day, *sums).where(*conditions).group_by(day).order_by(day))
        report = UsageReport(
            rows=[_usage_row(row) for row in found[:page.limit]],
            next_cursor=found[page.limit - 1].id if len(found) > page.limit else None,
            total=_total(None, *total),
            by_model=[_total(*row) for row in by_model],
            by_day=[_total(*row) for row in by_day],
        )
    return report


def _utc_day(connection: AsyncConnection, column: ColumnElement[Any]) -> Label[Any]:
    if connection.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD").label("day")
    return func.date(column).label("day")


def _usage_row(row: Row[*tuple[Any, ...]]) -> UsageRow:
    return UsageRow(row.job_id, as_utc(row.created_at), row.key_id, row.provider, row.model, row.input_tokens,
                    row.output_tokens, row.images, row.reported, int(row.cost), row.batch_id)


def _total(group: str | None, requests: int, input_tokens: int, output_tokens: int, images: int,
           cost: int) -> UsageTotal:
    return UsageTotal(group, int(requests), int(input_tokens), int(output_tokens), int(images), int(cost))


async def ledger_statement(engine: AsyncEngine, account_id: int, page: Page) -> Statement:
    """An account's ledger entries with their transactions, newest first."""
    async with engine.connect() as connection:
        if (await connection.execute(select(accounts.c.id).where(accounts.c.id == account_id))).first() is None:
            raise AccountNotFound(f"No account {account_id}")
        listed = (
            select(ledger_entries.c.id, ledger_entries.c.transaction_id, ledger_transactions.c.kind,
                   ledger_transactions.c.reference, ledger_transactions.c.memo, ledger_entries.c.bucket,
                   ledger_entries.c.amount, ledger_transactions.c.created_at)
            .join(ledger_transactions, ledger_transactions.c.id == ledger_entries.c.transaction_id)
            .where(ledger_entries.c.account_id == account_id)
        )
        if page.cursor is not None:
            listed = listed.where(ledger_entries.c.id < page.cursor)
        listed = listed.order_by(ledger_entries.c.id.desc()).offset(page.offset).limit(page.limit + 1)
        found = (await connection.execute(listed)).all()
    entries = [StatementEntry(row.id, row.transaction_id, row.kind, row.reference, row.memo, row.bucket,
                              int(row.amount), as_utc(row.created_at)) for row in found[:page.limit]]
    return Statement(entries, found[page.limit - 1].id if len(found) > page.limit else None)
