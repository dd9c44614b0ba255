"""The double-entry primitives every money movement is made of: postings,
one balanced ledger transaction per ``(kind, reference)``, the cached
balances (and ``seq``) of the user accounts it moves, the system accounts,
and expiring credit spent first.

System accounts keep no cached balance (their balance is the sum of their
entries): every settlement would otherwise lock the same row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Table, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from billing.balances import AccountChange
from schema.tables import accounts, credit_grants, ledger_entries, ledger_transactions

AVAILABLE, HELD = "available", "held"
GRANTS, REVENUE, TOPUPS = "system:grants", "system:revenue", "system:topups"


@dataclass(frozen=True, slots=True)
class Posting:
    account_id: int
    bucket: str
    amount: int
    # System accounts keep no cached balance (their balance is the sum of
    # their entries): every settlement would otherwise lock the same row.
    system: bool = False



class SystemAccounts:
    """The system accounts' ids, read once per process."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    async def id(self, connection: AsyncConnection, name: str) -> int:
        if name not in self._ids:
            statement = select(accounts.c.id).where(accounts.c.name == name, accounts.c.kind == "system")
            self._ids[name] = (await connection.execute(statement)).scalar_one()
        return self._ids[name]


async def draw_down_grants(connection: AsyncConnection, spent: Mapping[int, int], now: float) -> None:
    """Spend expiring credit first, the soonest to expire first: what each
    account (``spent``: account -> micro-credits) spent, in one read of
    their open grants."""
    spending = {account_id: amount for account_id, amount in spent.items() if amount > 0}
    if not spending:
        return
    open_grants = await connection.execute(
        select(credit_grants.c.id, credit_grants.c.account_id, credit_grants.c.remaining)
        .where(credit_grants.c.account_id.in_(spending), credit_grants.c.remaining > 0,
               credit_grants.c.expires_at > now)
        .order_by(credit_grants.c.account_id, credit_grants.c.expires_at, credit_grants.c.id)
        .with_for_update()
    )
    for grant in open_grants.all():
        drawn = min(grant.remaining, spending[grant.account_id])
        if drawn:
            await connection.execute(update(credit_grants).where(credit_grants.c.id == grant.id)
                                     .values(remaining=credit_grants.c.remaining - drawn))
            spending[grant.account_id] -= drawn


async def record(connection: AsyncConnection, kind: str, reference: str, postings: list[Posting], *,
                 memo: str | None = None) -> bool:
    """Append a balanced transaction's entries; False if (kind, reference) exists."""
    if sum(p.amount for p in postings) != 0:
        raise ValueError(f"unbalanced {kind} transaction {reference}: {postings}")
    statement = insert_ignoring_duplicates(connection, ledger_transactions, ["kind", "reference"]).values(
        kind=kind, reference=reference, memo=memo
    )
    transaction_id = (await connection.execute(statement.returning(ledger_transactions.c.id))).scalar_one_or_none()
    if transaction_id is None:
        return False
    entries = [{"transaction_id": transaction_id, "account_id": p.account_id, "bucket": p.bucket, "amount": p.amount}
               for p in postings if p.amount]
    if entries:
        await connection.execute(insert(ledger_entries), entries)
    return True


@dataclass(frozen=True, slots=True)
class Posted:
    """A ledger transaction as written: ``seqs`` holds the seq each user
    account it moved is at now. False when its ``(kind, reference)`` was
    written before (nothing moved)."""

    applied: bool
    seqs: dict[int, int]

    def __bool__(self) -> bool:
        return self.applied

    def credit(self, account_id: int, amount: int) -> list[AccountChange]:
        """The mirror's change for credit added to (or taken from) ``account_id``."""
        if not self.applied or account_id not in self.seqs:
            return []
        return [AccountChange(account_id, self.seqs[account_id], credit=amount)]


async def transact(connection: AsyncConnection, kind: str, reference: str, postings: list[Posting], *,
                    memo: str | None = None) -> Posted:
    """Record a transaction and apply it to the cached balances of its user
    accounts, one UPDATE per account, each raising the account's seq."""
    if not await record(connection, kind, reference, postings, memo=memo):
        return Posted(False, {})
    changes: dict[int, dict[str, int]] = {}
    for posting in postings:
        if posting.amount and not posting.system:
            buckets = changes.setdefault(posting.account_id, {})
            buckets[posting.bucket] = buckets.get(posting.bucket, 0) + posting.amount
    return Posted(True, {account_id: await move(connection, account_id, **buckets)
                         for account_id, buckets in sorted(changes.items())})


async def move(connection: AsyncConnection, account_id: int, *, available: int = 0, held: int = 0) -> int:
    """Move an account's cached balances; its new seq."""
    statement = (
        update(accounts).where(accounts.c.id == account_id)
        .values(available=accounts.c.available + available, held=accounts.c.held + held, seq=accounts.c.seq + 1)
        .returning(accounts.c.seq)
    )
    return int((await connection.execute(statement)).scalar_one())


def insert_ignoring_duplicates(connection: AsyncConnection, table: Table,
                               columns: list[str]) -> postgresql.Insert | sqlite.Insert:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=columns)
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=columns)
