"""The rows of ``holds``: opening one in a single statement on PostgreSQL,
and closing one (the first closer wins).

The one-statement hold is ``Ledger.hold``'s path on PostgreSQL, which only
tests use: requests take their holds in the balances mirror
(``billing.balances``), off the database. It makes the same reservation and
ledger entries as ``Ledger.hold``'s portable path, for a usable key without
spending limits; any other case reserves nothing here and takes the
portable path.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schema.tables import holds


async def open_hold_in_one_statement(engine: AsyncEngine, job_id: str, account_id: int, key_id: int, amount: int,
                                     expires_at: float, now: float) -> tuple[int, int, int] | None:
    """Reserve in one atomic statement, one round trip; the account's
    (available, held, seq) after it, or None if it reserved nothing."""
    parameters = {"job_id": job_id, "account_id": account_id, "key_id": key_id, "amount": amount,
                  "expires_at": expires_at, "now": now}
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        row = (await autocommit.execute(_HOLD_STATEMENT, parameters)).first()
    return (row.available, row.held, row.seq) if row else None


# PostgreSQL runs every data-modifying CTE, referenced or not, in one snapshot;
# the UPDATE's row lock and re-checked WHERE make the reservation atomic. The
# key's share lock makes a concurrent first limit (limits.seed) wait for this
# hold, or this statement re-check the key and reserve nothing.
_HOLD_STATEMENT = text("""
WITH usable_key AS (
    SELECT id FROM api_keys
    WHERE id = :key_id AND account_id = :account_id AND revoked_at IS NULL
      AND (expires_at IS NULL OR expires_at > :now)
      AND daily_limit IS NULL AND monthly_limit IS NULL AND total_limit IS NULL
    FOR KEY SHARE
), reserved AS (
    UPDATE accounts SET available = available - CAST(:amount AS BIGINT), held = held + CAST(:amount AS BIGINT),
                        seq = seq + 1
    WHERE id = :account_id AND available >= CAST(:amount AS BIGINT) AND EXISTS (SELECT 1 FROM usable_key)
    RETURNING available, held, seq
), opened AS (
    INSERT INTO holds (job_id, account_id, amount, expires_at, closed, key_id)
    SELECT :job_id, :account_id, CAST(:amount AS BIGINT), :expires_at, false, :key_id FROM reserved
    RETURNING job_id
), recorded AS (
    INSERT INTO ledger_transactions (kind, reference)
    SELECT 'hold', job_id FROM opened WHERE CAST(:amount AS BIGINT) > 0
    RETURNING id
), posted AS (
    INSERT INTO ledger_entries (transaction_id, account_id, bucket, amount)
    SELECT id, :account_id, 'available', -CAST(:amount AS BIGINT) FROM recorded
    UNION ALL
    SELECT id, :account_id, 'held', CAST(:amount AS BIGINT) FROM recorded
)
SELECT available, held, seq FROM reserved
""")


@dataclass(frozen=True, slots=True)
class ClosedHold:
    account_id: int
    amount: int
    key_id: int | None
    key_periods: str | None  # where the key counted it (limits.reserve)


_HOLD_COLUMNS = (holds.c.account_id, holds.c.amount, holds.c.key_id, holds.c.key_periods)


async def close_hold(connection: AsyncConnection, job_id: str) -> ClosedHold | None:
    """Atomically close an open hold; the first closer wins."""
    statement = (
        update(holds)
        .where(holds.c.job_id == job_id, holds.c.closed.is_(False))
        .values(closed=True)
        .returning(*_HOLD_COLUMNS)
    )
    row = (await connection.execute(statement)).first()
    return ClosedHold(*row) if row else None


async def closed_hold(connection: AsyncConnection, job_id: str) -> ClosedHold | None:
    row = (await connection.execute(select(*_HOLD_COLUMNS).where(holds.c.job_id == job_id))).first()
    return ClosedHold(*row) if row else None
