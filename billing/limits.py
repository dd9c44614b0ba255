"""Per-key spending limits (daily, monthly, total) and expiry, enforced by the
hold that reserves the account's credit, in the same database transaction.

A key with any limit counts what it spends in ``key_spend``, one row per
period: ``total``, ``day:2026-03-05`` and ``month:2026-03`` (UTC). A row holds
settled costs plus open holds. Admission adds the request's worst case to the
current row of each kind with one conditional upsert (``amount + hold <=
limit``), so concurrent requests can never take a key past a limit. The
periods are written on the hold: settlement adjusts exactly those by ``cost -
hold``, a release by ``-hold``, whenever either happens. A cost that no
hold counted (a usage event with no hold row, or whose hold was released
before the key had a limit) is counted in the periods it settles in.

A key that gets its first limit starts from what it has already spent
(``seed``): its usage records and open holds. Seeding locks the key's row and
every hold share-locks it, so no hold slips in between uncounted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, Select, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.history import stored_time
from billing.statements import DialectInsert, among, insert_for, per_dialect
from schema.errors import KeyExpired, KeyLimitExceeded, KeyRevoked, Unauthenticated
from schema.money import micros_to_credits
from schema.tables import api_keys, holds, key_spend, usage_records

KINDS = ("day", "month", "total")
_NAMES = {"day": "daily", "month": "monthly", "total": "total"}
_RESETS = {"day": " until 00:00 UTC", "month": " this month (UTC)", "total": ""}


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """Micro-credits a key may spend per UTC day, per UTC month and in total
    (``None``: no limit of that kind)."""

    daily: int | None = None
    monthly: int | None = None
    total: int | None = None

    def __bool__(self) -> bool:
        return any(limit is not None for limit in (self.daily, self.monthly, self.total))

    def of(self, kind: str) -> int | None:
        limit: int | None = getattr(self, _NAMES[kind])
        return limit


def limits_of(row: Row[*tuple[Any, ...]]) -> KeyLimits:
    """The limits of an ``api_keys`` row."""
    return KeyLimits(row.daily_limit, row.monthly_limit, row.total_limit)


def periods_at(now: float) -> dict[str, str]:
    """The ``key_spend`` period of each kind that ``now`` falls in."""
    moment = datetime.fromtimestamp(now, UTC)
    return {"day": f"day:{moment:%Y-%m-%d}", "month": f"month:{moment:%Y-%m}", "total": "total"}


def check_usable(*, revoked: bool, expires_at: float | None, now: float) -> None:
    if revoked:
        raise KeyRevoked("This API key has been revoked")
    if expires_at is not None and expires_at <= now:
        raise expired_key(expires_at)


def expired_key(expires_at: float) -> KeyExpired:
    expired = datetime.fromtimestamp(expires_at, UTC).isoformat()
    return KeyExpired(f"This API key expired at {expired}: ask for a new key")


async def admit_key(connection: AsyncConnection, key_id: int, account_id: int, now: float) -> KeyLimits:
    """Read a key for a hold and share-lock it (PostgreSQL) until the hold
    commits; refuses a revoked or expired key."""
    statement = (
        select(api_keys.c.account_id, api_keys.c.revoked_at, api_keys.c.expires_at,
               api_keys.c.daily_limit, api_keys.c.monthly_limit, api_keys.c.total_limit)
        .where(api_keys.c.id == key_id)
        .with_for_update(key_share=True)
    )
    row = (await connection.execute(statement)).first()
    if row is None or row.account_id != account_id:
        raise Unauthenticated("Incorrect API key provided")
    check_usable(revoked=row.revoked_at is not None, expires_at=row.expires_at, now=now)
    return limits_of(row)


async def reserve(connection: AsyncConnection, key_id: int, limits: KeyLimits, amount: int, now: float) -> str:
    """Count a hold of ``amount`` in the key's current periods; returns them
    (to store on the hold). Raises ``KeyLimitExceeded`` if it does not fit
    a limit; the caller's transaction then rolls back whatever was counted."""
    periods = periods_at(now)
    for kind, period in periods.items():
        limit = limits.of(kind)
        # Spend is never negative: a hold larger than the limit cannot fit.
        fits = (limit is None or amount <= limit) and await _count(connection, key_id, period, amount, limit)
        if not fits:
            assert limit is not None, "only a limit refuses to count a hold"
            spent = (await connection.execute(
                select(key_spend.c.amount).where(key_spend.c.key_id == key_id, key_spend.c.period == period)
            )).scalar() or 0
            raise exceeded(kind, amount, limit, spent)
    return " ".join(periods.values())


async def _count(connection: AsyncConnection, key_id: int, period: str, amount: int, limit: int | None) -> bool:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(key_spend).values(key_id=key_id, period=period, amount=amount)
    added = key_spend.c.amount + statement.excluded.amount
    statement = statement.on_conflict_do_update(
        index_elements=["key_id", "period"], set_={"amount": added},
        where=added <= limit if limit is not None else None,
    )
    return (await connection.execute(statement.returning(key_spend.c.amount))).first() is not None


def exceeded(kind: str, amount: int, limit: int, spent: int) -> KeyLimitExceeded:
    left = max(limit - spent, 0)
    return KeyLimitExceeded(
        f"This request can cost up to {micros_to_credits(amount)} credits and this key's {_NAMES[kind]} limit of "
        f"{micros_to_credits(limit)} credits has {micros_to_credits(left)} left{_RESETS[kind]}: "
        f"lower max_tokens or raise the key's limit"
    )


async def adjust(connection: AsyncConnection, key_id: int, periods: str, delta: int) -> None:
    """Move a closed hold's periods by what settling or releasing it changed."""
    if not delta:
        return
    for period in periods.split():
        await connection.execute(
            update(key_spend).where(key_spend.c.key_id == key_id, key_spend.c.period == period)
            .values(amount=key_spend.c.amount + delta)
        )


@per_dialect
def _add(dialect: str) -> DialectInsert:
    statement = insert_for(dialect)(key_spend)
    return statement.on_conflict_do_update(index_elements=["key_id", "period"],
                                           set_={"amount": key_spend.c.amount + statement.excluded.amount})


async def add_many(connection: AsyncConnection, deltas: Mapping[tuple[int, str], int]) -> None:
    """Count each ``(key, period) -> delta``, starting a period that has no
    row yet; one statement (executemany), in key and period order (the lock
    order)."""
    rows = [{"key_id": key_id, "period": period, "amount": delta}
            for (key_id, period), delta in sorted(deltas.items()) if delta]
    if rows:
        await connection.execute(_add(connection), rows)


async def seed(connection: AsyncConnection, key_id: int, account_id: int, now: float) -> None:
    """Start counting a key that had no limits: each current period gets its
    usage so far plus its open holds, which from now on adjust these periods.

    The caller holds the key's row lock (``SELECT … FOR UPDATE``): holds of
    the key wait for it, and settlements of its open holds wait here on the
    hold rows."""
    periods = periods_at(now)
    attached = await connection.execute(
        update(holds)
        .where(holds.c.account_id == account_id, holds.c.key_id == key_id, holds.c.closed.is_(False))
        .values(key_periods=" ".join(periods.values()))
        .returning(holds.c.amount)
    )
    held = sum(attached.scalars())
    moment = datetime.fromtimestamp(now, UTC)
    starts = {"day": moment.replace(hour=0, minute=0, second=0, microsecond=0),
              "month": moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0), "total": None}
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    for kind, period in periods.items():
        spent = select(func.coalesce(func.sum(usage_records.c.cost), 0)).where(
            usage_records.c.account_id == account_id, usage_records.c.key_id == key_id
        )
        if (start := starts[kind]) is not None:
            spent = spent.where(usage_records.c.created_at >= stored_time(connection, start))
        amount = int((await connection.execute(spent)).scalar_one()) + held
        statement = dialect.insert(key_spend).values(key_id=key_id, period=period, amount=amount)
        await connection.execute(statement.on_conflict_do_update(index_elements=["key_id", "period"],
                                                                 set_={"amount": statement.excluded.amount}))


async def spend(connection: AsyncConnection, key_id: int, now: float) -> dict[str, int]:
    """What a key has counted in each current period (settled and held)."""
    periods = periods_at(now)
    rows = dict((await connection.execute(
        select(key_spend.c.period, key_spend.c.amount)
        .where(key_spend.c.key_id == key_id, key_spend.c.period.in_(periods.values()))
    )).all())
    return {kind: int(rows.get(period, 0)) for kind, period in periods.items()}


async def audit(connection: AsyncConnection) -> list[tuple[int, int, int]]:
    """For every key with a limit: (key, recorded, recomputed) where its
    ``total`` counter differs from its usage records plus its open holds."""
    limited = select(api_keys.c.id).where(
        api_keys.c.daily_limit.is_not(None) | api_keys.c.monthly_limit.is_not(None)
        | api_keys.c.total_limit.is_not(None)
    )
    recorded = dict((await connection.execute(
        select(key_spend.c.key_id, key_spend.c.amount)
        .where(key_spend.c.period == "total", key_spend.c.key_id.in_(limited))
    )).all())
    used = dict((await connection.execute(
        select(usage_records.c.key_id, func.sum(usage_records.c.cost))
        .where(usage_records.c.key_id.in_(limited)).group_by(usage_records.c.key_id)
    )).all())
    held = dict((await connection.execute(
        select(holds.c.key_id, func.sum(holds.c.amount))
        .where(holds.c.closed.is_(False), holds.c.key_id.in_(limited)).group_by(holds.c.key_id)
    )).all())
    found = []
    for key_id in (await connection.execute(limited)).scalars():
        recomputed = int(used.get(key_id, 0)) + int(held.get(key_id, 0))
        if int(recorded.get(key_id, 0)) != recomputed:
            found.append((key_id, int(recorded.get(key_id, 0)), recomputed))
    return found


@per_dialect
def _limited_keys(dialect: str) -> Select[Any]:
    return (select(api_keys.c.id, api_keys.c.daily_limit, api_keys.c.monthly_limit, api_keys.c.total_limit)
            .where(among(api_keys.c.id, "key_ids", dialect)).order_by(api_keys.c.id).with_for_update(key_share=True))


async def limited_keys(connection: AsyncConnection, key_ids: set[int]) -> set[int]:
    """Which of these keys have a spending limit. Share-locks them, as a hold
    does, until the transaction ends: a first limit being set (``seed``, which
    locks the key, then its holds) either sees what this transaction counts or
    is seen by it. Take it before any hold row."""
    if not key_ids:
        return set()
    rows = (await connection.execute(_limited_keys(connection), {"key_ids": sorted(key_ids)})).all()
    return {row.id for row in rows if limits_of(row)}
