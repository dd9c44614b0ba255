"""The hold journal (distributed mode): the holds an ingress took in the
balances mirror, written into the ledger in the background, many per
transaction, so that a Redis that loses the mirror loses no open hold.

A hold is noted as it is taken (no await) and written within ``LINGER``
seconds: its row, its ``hold`` transaction, the account's balances (and
``seq``) and, for a key with limits, its spend counters, as the database
hold always was. The mirror is then told (it has the hold already; after a
Redis restart it takes it again). A hold whose job settled first (the
settlement recorded it closed) is not written again.

A hold cancelled because its job was never queued (the broker refused it)
is dropped if not written yet, and released in the ledger by the journal
if it was: a burst of refusals must not queue requests behind the
database, each waiting for a connection to release its own hold.

Nothing waits on the journal but the journal: if the database is down or
its pool is exhausted it keeps what it has and retries; ``flush`` at
shutdown writes what is left.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.sql.dml import ReturningInsert

from billing import limits
from billing.balances import AccountChange, Balance, Balances, Held, Reservation
from billing.ledger import Ledger
from billing.postings import AVAILABLE, HELD, Entry, move_many, record_many
from billing.statements import ignoring_duplicates, per_dialect
from schema.errors import ServiceUnavailable
from schema.money import MicroCredits
from schema.tables import holds

log = logging.getLogger(__name__)

LINGER = 0.02  # seconds a hold may wait for others to share its transaction (at low load, one each cost ~4 ms)
BATCH = 500
RETRY_DELAY = 1.0


@per_dialect
def _insert_holds(dialect: str) -> ReturningInsert[Any]:
    return ignoring_duplicates(dialect, holds, ("job_id",)).returning(holds.c.job_id)


async def record_holds(ledger: Ledger, reservations: Sequence[Reservation]) -> list[AccountChange]:
    """Write holds into the ledger, in one transaction; the mirror's changes."""
    async with ledger.engine.begin() as connection:
        limited = await limits.limited_keys(connection, {reservation.key_id for reservation in reservations})
        rows = [{"job_id": r.job_id, "account_id": r.account_id, "amount": r.amount, "expires_at": r.expires_at,
                 "closed": False, "key_id": r.key_id,
                 "key_periods": " ".join(r.periods) if r.key_id in limited else None} for r in reservations]
        written = set((await connection.execute(_insert_holds(connection), rows)).scalars())
        new = [reservation for reservation in reservations if reservation.job_id in written]
        if not new:
            return []
        by_account: dict[int, list[Reservation]] = defaultdict(list)
        for reservation in new:
            by_account[reservation.account_id].append(reservation)
        seqs = await move_many(connection, {account_id: (-sum(r.amount for r in held), sum(r.amount for r in held))
                                            for account_id, held in by_account.items()})
        moved = [reservation for reservation in new if reservation.amount]
        await record_many(connection, [{"kind": "hold", "reference": r.job_id, "seq": None} for r in moved],
                          [Entry("hold", r.job_id, r.account_id, bucket, amount)
                           for r in moved for bucket, amount in ((AVAILABLE, -r.amount), (HELD, r.amount))])
        counted: dict[tuple[int, str], int] = defaultdict(int)
        for reservation in new:
            if reservation.key_id in limited:
                for period in reservation.periods:
                    counted[(reservation.key_id, period)] += reservation.amount
        await limits.add_many(connection, counted)
    return [AccountChange(account_id, seqs[account_id], held=tuple(
        Held(r.job_id, r.amount, r.key_id, r.periods, r.expires_at) for r in held))
        for account_id, held in by_account.items()]


class HoldJournal:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._pending: dict[str, Reservation] = {}
        self._writing: set[str] = set()
        self._releasing: set[str] = set()  # cancelled once written (or while being written): released here
        self._unapplied: list[AccountChange] = []  # written, but the mirror could not be told yet
        self._wake = asyncio.Event()

    def note(self, reservation: Reservation) -> None:
        self._pending[reservation.job_id] = reservation
        self._wake.set()

    def forget(self, job_id: str) -> None:
        """Drop the hold of a job that was never queued: one not written
        yet is not written; one being written, or written already, is
        released in the ledger in the background."""
        if job_id in self._writing or self._pending.pop(job_id, None) is None:
            self._releasing.add(job_id)
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(LINGER)
            self._wake.clear()
            try:
                await self._tell_mirror()
                await self._write()
                await self._release()
            except (DBAPIError, OSError, PoolTimeout) as error:
                log.warning("the hold journal could not write %d holds or release %d (%s); retrying",
                            len(self._pending), len(self._releasing), error)
                await asyncio.sleep(RETRY_DELAY)
                self._wake.set()
            except ServiceUnavailable as error:
                # Written, but not yet in a mirror that was lost meanwhile: told again shortly.
                log.warning("the hold journal could not tell the balances mirror (%s); retrying", error.message)
                await asyncio.sleep(RETRY_DELAY)
                self._wake.set()

    async def _tell_mirror(self) -> None:
        if self._unapplied:
            await self._ledger.followed(self._unapplied)
            self._unapplied = []

    async def flush(self) -> None:
        while self._pending:
            await self._write()
        await self._release()
        await self._tell_mirror()

    async def _release(self) -> None:
        """Release in the ledger the cancelled holds it has (one still to be
        written, its write having failed, waits for it)."""
        for job_id in [job_id for job_id in self._releasing if job_id not in self._pending]:
            await self._ledger.release(job_id)
            self._releasing.discard(job_id)

    async def _write(self) -> None:
        batch = list(self._pending.values())[:BATCH]
        if not batch:
            return
        self._writing = {reservation.job_id for reservation in batch}
        try:
            changes = await record_holds(self._ledger, batch)
        finally:
            self._writing = set()
        for reservation in batch:
            if self._pending.get(reservation.job_id) is reservation:
                del self._pending[reservation.job_id]
        if self._pending:
            self._wake.set()
        self._unapplied += changes
        await self._tell_mirror()


class JournaledBalances:
    """A mirror whose holds the journal writes into the ledger (an ingress
    in distributed mode); everything else is the mirror's."""

    def __init__(self, balances: Balances, journal: HoldJournal, ledger: Ledger) -> None:
        self._balances = balances
        self._journal = journal
        self._ledger = ledger

    async def reserve(self, reservation: Reservation) -> Balance:
        balance = await self._balances.reserve(reservation)
        self._journal.note(reservation)
        return balance

    async def cancel(self, job_id: str, account_id: int) -> None:
        await self._balances.cancel(job_id, account_id)
        self._journal.forget(job_id)  # and, if the journal wrote it, released in the ledger too

    async def apply(self, changes: Sequence[AccountChange]) -> None:
        await self._balances.apply(changes)

    async def balance(self, account_id: int) -> Balance:
        return await self._balances.balance(account_id)

    async def overdue(self, now: float, *, limit: int = 500) -> list[tuple[str, int]]:
        return await self._balances.overdue(now, limit=limit)

    async def forget_key(self, key_id: int) -> None:
        await self._balances.forget_key(key_id)

    async def outstanding(self) -> tuple[int, MicroCredits]:
        return await self._balances.outstanding()

    async def aclose(self) -> None:
        await self._journal.flush()
        await self._balances.aclose()
