"""What the balances mirror loads from the ledger: an account with its open
holds, and a key with what it has counted in its current periods, each read
in one snapshot with the account's ``seq``, so the mirror can tell which
later changes the snapshot already has."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billing.balances import AccountSnapshot, KeySnapshot, OpenHold
from billing.limits import limits_of, periods_at
from schema.tables import accounts, api_keys, holds, key_spend


class LedgerSnapshots:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # One snapshot per read (PostgreSQL); SQLite reads inside one transaction see one anyway.
        self._snapshot = {"isolation_level": "REPEATABLE READ"} if engine.dialect.name == "postgresql" else {}

    async def account(self, account_id: int) -> AccountSnapshot | None:
        async with self._engine.connect() as plain, (await plain.execution_options(**self._snapshot)).begin():
            connection: AsyncConnection = plain
            row = (await connection.execute(
                select(accounts.c.available, accounts.c.held, accounts.c.seq)
                .where(accounts.c.id == account_id, accounts.c.kind == "user"))).first()
            if row is None:
                return None
            open_holds = (await connection.execute(
                select(holds.c.job_id, holds.c.amount, holds.c.key_id, holds.c.key_periods, holds.c.expires_at)
                .where(holds.c.account_id == account_id, holds.c.closed.is_(False)))).all()
        return AccountSnapshot(account_id, int(row.available), int(row.held), int(row.seq), tuple(
            OpenHold(hold.job_id, int(hold.amount), hold.key_id,
                     tuple(hold.key_periods.split()) if hold.key_periods else (), float(hold.expires_at))
            for hold in open_holds))

    async def key(self, key_id: int, now: float) -> KeySnapshot | None:
        async with self._engine.connect() as plain, (await plain.execution_options(**self._snapshot)).begin():
            connection: AsyncConnection = plain
            row = (await connection.execute(
                select(api_keys, accounts.c.seq).join(accounts, accounts.c.id == api_keys.c.account_id)
                .where(api_keys.c.id == key_id))).first()
            if row is None:
                return None
            key_limits = limits_of(row)
            spend: dict[str, int] = {}
            if key_limits:
                periods = list(periods_at(now).values())
                spend = {period: int(amount) for period, amount in (await connection.execute(
                    select(key_spend.c.period, key_spend.c.amount)
                    .where(key_spend.c.key_id == key_id, key_spend.c.period.in_(periods)))).all()}
        return KeySnapshot(key_id, row.account_id, row.revoked_at is not None, row.expires_at, key_limits,
                           int(row.seq), spend)
