"""Accounts, keys, holds and the double-entry ledger, in the database.

Every money movement is one ledger transaction whose entries sum to zero and
whose ``(kind, reference)`` is unique: a job is held, charged or released at
most once, however often its events are delivered. The cached
``accounts.available`` and ``accounts.held`` change in the same database
transaction as the entries, so ``reconcile`` can recompute them.

Admission does not hold here: an ingress takes a hold in the balances
mirror (``billing.balances``), and the ledger learns of it from the hold
journal (``billing.journal``, distributed) or when its job settles or is
released (embedded). ``Ledger.hold``, a hold taken in the database, is used
by tests only: it reserves with one conditional
``UPDATE … WHERE available >= :hold``, so that under concurrency an account
can never reserve more than it has, and a key with spending limits also
counts the hold in its periods (``billing.limits``), in the same database
transaction.

Credits that expire (``credit_grants``) are spent first: settlement draws
them down, soonest expiry first, in the charge's own transaction, and
``expire_grants`` returns what is left of an expired grant to system:grants.
Lock order, to keep PostgreSQL free of deadlocks: the key (share), credit
grants, the user's account, system accounts, then the key's spend counters.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billing import limits, settlement
from billing.balances import AccountChange, Balance, Held, Released
from billing.holds import close_hold, open_hold_in_one_statement
from billing.limits import KeyLimits
from billing.postings import AVAILABLE, GRANTS, HELD, TOPUPS, Posting, SystemAccounts, move, record, transact
from schema.errors import InsufficientCredits, UnknownAccount
from schema.jobs import UsageEvent
from schema.money import MicroCredits, micros_to_credits
from schema.tables import accounts, api_keys, credit_grants, holds, ledger_entries


@dataclass(frozen=True, slots=True)
class KeyOwner:
    key_id: int
    account_id: int
    expires_at: float | None = None  # unix seconds
    revoked: bool = False
    plan: str | None = None  # the config's plan name; none: the default plan


@dataclass(frozen=True, slots=True)
class Discrepancy:
    account_id: int
    what: str
    recorded: int
    recomputed: int


Follower = Callable[[Sequence[AccountChange]], Awaitable[None]]


class Ledger:
    """``follow``: told every committed change to a user account's credit
    (the balances mirror's ``apply``), once its transaction committed."""

    def __init__(self, engine: AsyncEngine, *, follow: Follower | None = None) -> None:
        self.engine = engine
        self._system = SystemAccounts()
        self._follow = follow

    async def followed(self, changes: Sequence[AccountChange] | None) -> None:
        """Tell the mirror what just committed."""
        if changes and self._follow is not None:
            await self._follow(changes)

    async def system_account(self, connection: AsyncConnection, name: str) -> int:
        return await self._system.id(connection, name)

    # accounts and keys

    async def create_account(self, name: str, grant: MicroCredits) -> int:
        async with self.engine.begin() as connection:
            statement = insert(accounts).values(name=name, kind="user", available=0, held=0).returning(accounts.c.id)
            account_id: int = (await connection.execute(statement)).scalar_one()
            changes: list[AccountChange] = []
            if grant:
                grants = await self.system_account(connection, GRANTS)
                posted = await transact(connection, "grant", f"account:{account_id}:initial",
                                         [Posting(grants, AVAILABLE, -grant, system=True),
                                          Posting(account_id, AVAILABLE, grant)], memo="initial credits")
                changes = posted.credit(account_id, grant)
        await self.followed(changes)
        return account_id

    async def create_key(self, account_id: int, name: str, key_hash: str, prefix: str, *,
                         limits: KeyLimits = KeyLimits(), expires_at: float | None = None,
                         plan: str | None = None) -> int:
        async with self.engine.begin() as connection:
            statement = insert(api_keys).values(
                account_id=account_id, name=name, key_hash=key_hash, prefix=prefix, daily_limit=limits.daily,
                monthly_limit=limits.monthly, total_limit=limits.total, expires_at=expires_at, plan=plan,
            )
            key_id: int = (await connection.execute(statement.returning(api_keys.c.id))).scalar_one()
            return key_id

    async def count_user_accounts(self) -> int:
        async with self.engine.connect() as connection:
            statement = select(func.count()).select_from(accounts).where(accounts.c.kind == "user")
            return (await connection.execute(statement)).scalar_one()

    async def key_owner(self, key_hash: str) -> KeyOwner | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(_KEY_OWNER, {"key_hash": key_hash})).first()
        return KeyOwner(row.id, row.account_id, row.expires_at, row.revoked_at is not None, row.plan) if row else None

    async def balance(self, account_id: int) -> Balance:
        statement = select(accounts.c.available, accounts.c.held).where(accounts.c.id == account_id)
        async with self.engine.connect() as connection:
            row = (await connection.execute(statement)).one()
        return Balance(MicroCredits(row.available), MicroCredits(row.held))

    # holds and settlement

    async def hold(self, job_id: str, account_id: int, amount: MicroCredits, *, expires_at: float,
                   key_id: int | None = None, now: float | None = None) -> Balance:
        """Reserve ``amount`` for a job; raises ``InsufficientCredits``,
        reserving nothing, when the account's available credit cannot cover it.

        With ``key_id``, the key must be usable (not revoked or expired:
        ``KeyRevoked``, ``KeyExpired``) and ``amount`` must fit each of its
        spending limits (``KeyLimitExceeded``)."""
        now = time.time() if now is None else now
        if key_id is not None and self.engine.dialect.name == "postgresql":
            reserved = await open_hold_in_one_statement(self.engine, job_id, account_id, key_id, amount, expires_at,
                                                        now)
            if reserved is not None:
                available, held, seq = reserved
                await self.followed([AccountChange(account_id, seq, held=(
                    Held(job_id, amount, key_id, (), expires_at),))])
                return Balance(MicroCredits(available), MicroCredits(held))
            # Not reserved: a key with limits, or a refusal the portable path explains.
        async with self.engine.begin() as connection:
            key_limits = await limits.admit_key(connection, key_id, account_id, now) if key_id is not None else None
            reserve = (
                update(accounts)
                .where(accounts.c.id == account_id, accounts.c.available >= amount)
                .values(available=accounts.c.available - amount, held=accounts.c.held + amount,
                        seq=accounts.c.seq + 1)
                .returning(accounts.c.available, accounts.c.held, accounts.c.seq)
            )
            row = (await connection.execute(reserve)).first()
            if row is None:
                left = (await connection.execute(
                    select(accounts.c.available).where(accounts.c.id == account_id))).scalar()
                raise _insufficient(amount, left)
            periods = (await limits.reserve(connection, key_id, key_limits, amount, now)
                       if key_limits and key_id is not None else None)
            await connection.execute(insert(holds).values(job_id=job_id, account_id=account_id, amount=amount,
                                                          expires_at=expires_at, closed=False, key_id=key_id,
                                                          key_periods=periods))
            if amount:
                await record(connection, "hold", job_id,
                              [Posting(account_id, AVAILABLE, -amount), Posting(account_id, HELD, amount)])
        held_periods = tuple(periods.split()) if periods else ()
        await self.followed([AccountChange(account_id, row.seq, held=(
            Held(job_id, amount, key_id, held_periods, expires_at),))])
        return Balance(MicroCredits(row.available), MicroCredits(row.held))

    async def release(self, job_id: str) -> bool:
        """Close a job's hold without charging (the job never ran)."""
        async with self.engine.begin() as connection:
            changes = await self._release(connection, job_id)
        await self.followed(changes)
        return changes is not None

    async def _release(self, connection: AsyncConnection, job_id: str) -> list[AccountChange] | None:
        claimed = await close_hold(connection, job_id)
        if claimed is None:
            return None
        seq = await move(connection, claimed.account_id, available=claimed.amount, held=-claimed.amount)
        if claimed.amount:
            await record(connection, "release", job_id, [Posting(claimed.account_id, HELD, -claimed.amount),
                                                          Posting(claimed.account_id, AVAILABLE, claimed.amount)])
        if claimed.key_periods and claimed.key_id is not None:
            await limits.adjust(connection, claimed.key_id, claimed.key_periods, -claimed.amount)
        return [AccountChange(claimed.account_id, seq, released=(Released(job_id),))]

    async def settle(self, event: UsageEvent, *, now: float | None = None) -> bool:
        """Charge one job's usage and close its hold, once; False if it was settled before."""
        return bool((await self.settle_many([event], now=now)).settled)

    async def settle_many(self, events: Sequence[UsageEvent], *, now: float | None = None) -> settlement.Outcome:
        """Charge each job's usage once, in one transaction (``billing.settlement``).
        ``now`` (default: the clock) is the moment they settle in: which credit
        grants are spendable, and the key periods of a job whose hold time is unknown."""
        return await settlement.settle(self, events, now=now)

    async def release_expired(self, now: float | None = None, *, limit: int = 500) -> int:
        """Release holds whose job never reported by its deadline (plus grace)."""
        statement = (
            select(holds.c.job_id)
            .where(holds.c.closed.is_(False), holds.c.expires_at < (now if now is not None else time.time()))
            .limit(limit)
        )
        return await self._one_transaction_each(statement, self._release)

    # top-ups and expiring grants

    async def top_up(self, reference: str, account_id: int, amount: MicroCredits, *, memo: str | None = None) -> bool:
        """Credit a payment to a user account, once per ``reference`` (the
        payment event's id). Returns False if that reference already credited."""
        if amount <= 0:
            raise ValueError(f"a top-up must be positive, not {amount}")
        async with self.engine.begin() as connection:
            await user_account(connection, account_id)
            topups = await self.system_account(connection, TOPUPS)
            posted = await transact(connection, "topup", reference, [Posting(account_id, AVAILABLE, amount),
                                                                      Posting(topups, AVAILABLE, -amount, system=True)],
                                     memo=memo)
        await self.followed(posted.credit(account_id, amount))
        return posted.applied

    async def expire_grants(self, now: float | None = None, *, limit: int = 500) -> int:
        """Take back what is left of each grant whose expiry has passed: at
        most what the account has available (credit held for a running job
        stays with it). Returns how many grants expired."""
        statement = (
            select(credit_grants.c.id)
            .where(credit_grants.c.remaining > 0,
                   credit_grants.c.expires_at <= (now if now is not None else time.time()))
            .order_by(credit_grants.c.expires_at)
            .limit(limit)
        )
        return await self._one_transaction_each(statement, self._expire)

    async def _one_transaction_each(
            self, due: Select[Any], close: Callable[[AsyncConnection, Any], Awaitable[list[AccountChange] | None]],
    ) -> int:
        """Run ``close`` on each id ``due`` selects, each in its own
        transaction (a sweep never holds many locks); how many it closed."""
        async with self.engine.connect() as connection:
            ids = (await connection.execute(due)).scalars().all()
        closed = 0
        for item in ids:
            async with self.engine.begin() as connection:
                changes = await close(connection, item)
            if changes is not None:
                closed += 1
                await self.followed(changes)
        return closed

    async def _expire(self, connection: AsyncConnection, grant_id: int) -> list[AccountChange] | None:
        # A no-op write reads the grant under a write lock (a row lock in
        # PostgreSQL; in SQLite the database's, before any read goes stale).
        lock = (
            update(credit_grants)
            .where(credit_grants.c.id == grant_id, credit_grants.c.remaining > 0)
            .values(remaining=credit_grants.c.remaining)
            .returning(credit_grants.c.account_id, credit_grants.c.remaining)
        )
        grant = (await connection.execute(lock)).first()
        if grant is None:
            return None  # spent, or expired by another sweeper meanwhile
        await connection.execute(update(credit_grants).where(credit_grants.c.id == grant_id).values(remaining=0))
        available = (await connection.execute(
            select(accounts.c.available).where(accounts.c.id == grant.account_id).with_for_update()
        )).scalar_one()
        amount = min(grant.remaining, max(available, 0))
        grants = await self.system_account(connection, GRANTS)
        posted = await transact(connection, "expire", f"grant:{grant_id}",
                                 [Posting(grant.account_id, AVAILABLE, -amount),
                                  Posting(grants, AVAILABLE, amount, system=True)],
                                 memo="unspent trial credits expired")
        return posted.credit(grant.account_id, -amount) if posted else None

    # audit

    async def reconcile(self) -> list[Discrepancy]:
        """Recompute every account from its entries; report any difference.

        Reads one snapshot, so settlements committing meanwhile cannot show
        up as differences."""
        found: list[Discrepancy] = []
        snapshot = {"isolation_level": "REPEATABLE READ"} if self.engine.dialect.name == "postgresql" else {}
        async with self.engine.connect() as plain, (await plain.execution_options(**snapshot)).begin() as transaction:
            connection = transaction.connection
            sums = {
                (row.account_id, row.bucket): row.total
                for row in await connection.execute(
                    select(ledger_entries.c.account_id, ledger_entries.c.bucket,
                           func.sum(ledger_entries.c.amount).label("total"))
                    .group_by(ledger_entries.c.account_id, ledger_entries.c.bucket)
                )
            }
            open_holds = {
                row.account_id: row.total
                for row in await connection.execute(
                    select(holds.c.account_id, func.sum(holds.c.amount).label("total"))
                    .where(holds.c.closed.is_(False))
                    .group_by(holds.c.account_id)
                )
            }
            users = select(accounts.c.id, accounts.c.available, accounts.c.held).where(accounts.c.kind == "user")
            for row in await connection.execute(users):
                for bucket, recorded in ((AVAILABLE, row.available), (HELD, row.held)):
                    recomputed = int(sums.get((row.id, bucket), 0))
                    if recorded != recomputed:
                        found.append(Discrepancy(row.id, bucket, recorded, recomputed))
                if row.held != int(open_holds.get(row.id, 0)):
                    found.append(Discrepancy(row.id, "open holds", row.held, int(open_holds.get(row.id, 0))))
            unbalanced = await connection.execute(
                select(ledger_entries.c.transaction_id, func.sum(ledger_entries.c.amount).label("total"))
                .group_by(ledger_entries.c.transaction_id)
                .having(func.sum(ledger_entries.c.amount) != 0)
            )
            for entries in unbalanced:
                found.append(Discrepancy(0, f"transaction {entries.transaction_id} does not balance",
                                         int(entries.total), 0))
            for key_id, recorded, recomputed in await limits.audit(connection):
                found.append(Discrepancy(0, f"key {key_id} total spend", recorded, recomputed))
        return found


_KEY_OWNER = (
    select(api_keys.c.id, api_keys.c.account_id, api_keys.c.expires_at, api_keys.c.revoked_at, api_keys.c.plan)
    .where(api_keys.c.key_hash == bindparam("key_hash"))
)


def _insufficient(amount: int, available: int | None) -> InsufficientCredits:
    return InsufficientCredits(
        f"This request can cost up to {micros_to_credits(amount)} credits and your account has "
        f"{micros_to_credits(available or 0)} available: lower max_tokens or top up"
    )


async def user_account(connection: AsyncConnection, account_id: int) -> None:
    statement = select(accounts.c.id).where(accounts.c.id == account_id, accounts.c.kind == "user")
    if (await connection.execute(statement)).first() is None:
        raise UnknownAccount(f"No account {account_id}")


