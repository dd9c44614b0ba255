"""Accounts, keys and the ledger, in the database.

Every change of a balance is an appended ledger entry in the same transaction
as the balance update. Settlement is keyed by job id (a unique usage record),
so a redelivered usage event changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billing.pricing import cost_of
from schema.jobs import UsageEvent
from schema.money import MicroCredits
from schema.tables import accounts, api_keys, ledger_entries, usage_records


@dataclass(frozen=True, slots=True)
class KeyOwner:
    key_id: int
    account_id: int
    balance: MicroCredits


async def create_account(engine: AsyncEngine, name: str, grant: MicroCredits) -> int:
    async with engine.begin() as connection:
        account_id = (await connection.execute(insert(accounts).values(name=name, balance=0).returning(accounts.c.id))).scalar_one()
        if grant:
            await _post(connection, account_id, "grant", grant, reference="initial credits")
    return account_id


async def create_key(engine: AsyncEngine, account_id: int, name: str, key_hash: str, prefix: str) -> int:
    async with engine.begin() as connection:
        statement = insert(api_keys).values(account_id=account_id, name=name, key_hash=key_hash, prefix=prefix)
        return (await connection.execute(statement.returning(api_keys.c.id))).scalar_one()


async def count_accounts(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return (await connection.execute(select(func.count()).select_from(accounts))).scalar_one()


async def key_owner(engine: AsyncEngine, key_hash: str) -> KeyOwner | None:
    statement = (
        select(api_keys.c.id, api_keys.c.account_id, accounts.c.balance)
        .join(accounts, accounts.c.id == api_keys.c.account_id)
        .where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))
    )
    async with engine.connect() as connection:
        row = (await connection.execute(statement)).first()
    return KeyOwner(row.id, row.account_id, MicroCredits(row.balance)) if row else None


async def balance(engine: AsyncEngine, account_id: int) -> MicroCredits:
    async with engine.connect() as connection:
        value = (await connection.execute(select(accounts.c.balance).where(accounts.c.id == account_id))).scalar_one()
    return MicroCredits(value)


async def settle(engine: AsyncEngine, event: UsageEvent) -> bool:
    """Charge one job's usage, once. Returns False if it was already settled."""
    cost = cost_of(event.usage, event.price)
    async with engine.begin() as connection:
        record = _insert_ignoring_duplicates(connection).values(
            job_id=event.job_id,
            account_id=event.account_id,
            key_id=event.key_id,
            provider=event.provider,
            model=event.model,
            input_tokens=event.usage.input_tokens,
            output_tokens=event.usage.output_tokens,
            reported=event.usage.reported,
            cost=cost,
        )
        inserted = (await connection.execute(record.returning(usage_records.c.id))).first()
        if inserted is None:
            return False
        if cost:
            await _post(connection, event.account_id, "charge", MicroCredits(-cost), reference=event.job_id)
    return True


def _insert_ignoring_duplicates(connection: AsyncConnection):  # type: ignore[no-untyped-def]
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(usage_records).on_conflict_do_nothing(index_elements=["job_id"])


async def _post(connection: AsyncConnection, account_id: int, kind: str, amount: MicroCredits, *, reference: str) -> None:
    await connection.execute(
        insert(ledger_entries).values(account_id=account_id, kind=kind, amount=amount, reference=reference)
    )
    await connection.execute(
        update(accounts).where(accounts.c.id == account_id).values(balance=accounts.c.balance + amount)
    )
