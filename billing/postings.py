"""The double-entry primitives every money movement is made of: postings,
one balanced ledger transaction per ``(kind, reference)``, the cached
balances (and ``seq``) of the user accounts it moves, the system accounts,
and expiring credit spent first.

System accounts keep no cached balance (their balance is the sum of their
entries): every settlement would otherwise lock the same row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import orjson
from sqlalchemy import BigInteger, Select, TextClause, bindparam, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ReturningInsert

from billing.balances import AccountChange
from billing.statements import among, ignoring_duplicates, per_dialect
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


@per_dialect
def _open_grants(dialect: str) -> Select[Any]:
    return (
        select(credit_grants.c.id, credit_grants.c.account_id, credit_grants.c.remaining)
        .where(among(credit_grants.c.account_id, "account_ids", dialect), credit_grants.c.remaining > 0,
               credit_grants.c.expires_at > bindparam("now"))
        .order_by(credit_grants.c.account_id, credit_grants.c.expires_at, credit_grants.c.id)
        .with_for_update()
    )


_DRAW_GRANT = (update(credit_grants).where(credit_grants.c.id == bindparam("grant_id"))
               .values(remaining=credit_grants.c.remaining - bindparam("drawn", type_=BigInteger)))


async def draw_down_grants(connection: AsyncConnection, spent: Mapping[int, int], now: float) -> None:
    """Spend expiring credit first, the soonest to expire first: what each
    account (``spent``: account -> micro-credits) spent, in one read of
    their open grants and one (executemany) write."""
    spending = {account_id: amount for account_id, amount in spent.items() if amount > 0}
    if not spending:
        return
    open_grants = await connection.execute(_open_grants(connection),
                                           {"account_ids": sorted(spending), "now": now})
    draws = []
    for grant in open_grants.all():
        drawn = min(grant.remaining, spending[grant.account_id])
        if drawn:
            draws.append({"grant_id": grant.id, "drawn": drawn})
            spending[grant.account_id] -= drawn
    if draws:
        await connection.execute(_DRAW_GRANT, draws)


async def record(connection: AsyncConnection, kind: str, reference: str, postings: list[Posting], *,
                 memo: str | None = None) -> bool:
    """Append a balanced transaction's entries; False if (kind, reference) exists."""
    if sum(p.amount for p in postings) != 0:
        raise ValueError(f"unbalanced {kind} transaction {reference}: {postings}")
    statement = _record_transaction(connection)
    transaction_id = (await connection.execute(statement, {"kind": kind, "reference": reference, "memo": memo})
                      ).scalar_one_or_none()
    if transaction_id is None:
        return False
    entries = [{"transaction_id": transaction_id, "account_id": p.account_id, "bucket": p.bucket, "amount": p.amount}
               for p in postings if p.amount]
    if entries:
        await connection.execute(_ENTRIES, entries)
    return True


@per_dialect
def _record_transaction(dialect: str) -> ReturningInsert[Any]:
    return (ignoring_duplicates(dialect, ledger_transactions, ("kind", "reference"))
            .returning(ledger_transactions.c.id))


# Entries find their transaction by its unique (kind, reference): a batch's
# transactions and entries are two executemany inserts, no ids read back.
_ENTRY = insert(ledger_entries).values(transaction_id=(
    select(ledger_transactions.c.id)
    .where(ledger_transactions.c.kind == bindparam("kind"), ledger_transactions.c.reference == bindparam("reference"))
    .scalar_subquery()))
_TRANSACTION = insert(ledger_transactions)
_ENTRIES = insert(ledger_entries)


@dataclass(frozen=True, slots=True)
class Entry:
    """One posting of a batch's transaction ``(kind, reference)``."""

    kind: str
    reference: str
    account_id: int
    bucket: str
    amount: int


class NewTransaction(TypedDict):
    """A ledger transaction ``record_many`` appends; ``seq`` is its account's
    after the move (a charge's), or none."""

    kind: str
    reference: str
    seq: int | None


async def record_many(connection: AsyncConnection, transactions: Sequence[NewTransaction],
                      entries: Sequence[Entry]) -> None:
    """Append a batch's new transactions (each ``kind``, ``reference`` and
    ``seq``: none may exist yet) and their entries (zero amounts left out),
    in two statements."""
    if transactions:
        await connection.execute(_TRANSACTION, [dict(t) for t in transactions])
    rows = [{"kind": e.kind, "reference": e.reference, "account_id": e.account_id, "bucket": e.bucket,
             "amount": e.amount} for e in entries if e.amount]
    if rows:
        await connection.execute(_ENTRY, rows)


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


_MOVE = (
    update(accounts).where(accounts.c.id == bindparam("account_id"))
    .values(available=accounts.c.available + bindparam("d_available", type_=BigInteger),
            held=accounts.c.held + bindparam("d_held", type_=BigInteger), seq=accounts.c.seq + 1)
    .returning(accounts.c.seq)
)


async def move(connection: AsyncConnection, account_id: int, *, available: int = 0, held: int = 0) -> int:
    """Move an account's cached balances; its new seq."""
    parameters = {"account_id": account_id, "d_available": available, "d_held": held}
    return int((await connection.execute(_MOVE, parameters)).scalar_one())


# One statement for every account of a batch, its moves bound as one JSON
# array. PostgreSQL locks the accounts in id order first (as every other
# transaction does, so two batches never deadlock), then moves them; in the
# UPDATE's own mode (NO KEY UPDATE), which the key-share locks of rows
# referring to an account (a hold, a usage row) do not block.
_MOVE_MANY: dict[str, TextClause] = {
    "postgresql": text("""
WITH moves AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(CAST(:moves AS jsonb)) AS m(id integer, available bigint, held bigint)
), locked AS MATERIALIZED (
    SELECT accounts.id FROM accounts JOIN moves ON moves.id = accounts.id ORDER BY accounts.id
    FOR NO KEY UPDATE OF accounts
)
UPDATE accounts SET available = accounts.available + moves.available, held = accounts.held + moves.held,
                    seq = accounts.seq + 1
FROM moves JOIN locked ON locked.id = moves.id
WHERE accounts.id = moves.id
RETURNING accounts.id, accounts.seq
"""),
    "sqlite": text("""
UPDATE accounts SET available = accounts.available + moves.available, held = accounts.held + moves.held,
                    seq = accounts.seq + 1
FROM (SELECT value ->> '$.id' AS id, value ->> '$.available' AS available, value ->> '$.held' AS held
      FROM json_each(:moves)) AS moves
WHERE accounts.id = moves.id
RETURNING accounts.id, accounts.seq
"""),
}


async def move_many(connection: AsyncConnection, moves: Mapping[int, tuple[int, int]]) -> dict[int, int]:
    """Move several accounts' cached balances (``account -> (available,
    held)``) in one statement; each account's new seq."""
    if not moves:
        return {}
    data = orjson.dumps([{"id": account_id, "available": available, "held": held}
                         for account_id, (available, held) in sorted(moves.items())]).decode()
    rows = await connection.execute(_MOVE_MANY[connection.dialect.name], {"moves": data})
    return {int(account_id): int(seq) for account_id, seq in rows.all()}
