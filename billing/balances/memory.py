"""The balances mirror in this process's memory (embedded mode).

Every step is synchronous once its account and key are loaded, so a hold is
atomic without a lock: nothing else runs between its check and its take.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from billing.balances import AccountChange, AccountSnapshot, Balance, Held, KeySnapshot, Reservation, Snapshots
from billing.balances.rules import check_hold
from billing.limits import KeyLimits
from schema.errors import AccountNotFound, Unauthenticated
from schema.money import MicroCredits

# Jobs settled or released are remembered this long, so a change sent again
# (a redelivered settlement) is applied once.
REMEMBER = 3600.0


@dataclass(slots=True)
class _Hold:
    amount: int
    key_id: int | None
    periods: tuple[str, ...]
    expires_at: float
    journaled: bool = False  # the ledger has it (its key's counters there include it)
    counted_at_load: bool = False  # its key's counters were loaded with it added


@dataclass(slots=True)
class _Account:
    available: int
    held: int
    seq: int  # the ledger's seq this account was loaded at
    holds: dict[str, _Hold] = field(default_factory=dict)
    settled: dict[str, float] = field(default_factory=dict)  # job -> when
    released: dict[str, float] = field(default_factory=dict)
    credited: set[int] = field(default_factory=set)  # seqs of credits applied


@dataclass(slots=True)
class _Key:
    account_id: int
    revoked: bool
    expires_at: float | None
    limits: KeyLimits
    seq: int
    spend: dict[str, int]


class MemoryBalances:
    def __init__(self, snapshots: Snapshots) -> None:
        self._snapshots = snapshots
        self._accounts: dict[int, _Account] = {}
        self._keys: dict[int, _Key] = {}
        self._loading: dict[int, list[AccountChange]] = {}  # changes that came while the account loads
        self._account_loads: dict[int, asyncio.Task[None]] = {}
        self._key_loads: dict[int, asyncio.Task[None]] = {}

    async def aclose(self) -> None:
        for task in (*self._account_loads.values(), *self._key_loads.values()):
            task.cancel()

    # the hot path

    async def reserve(self, reservation: Reservation) -> Balance:
        account = self._accounts.get(reservation.account_id) or await self._load_account(reservation.account_id)
        key = self._keys.get(reservation.key_id) or await self._load_key(reservation.key_id, reservation.now)
        if key.account_id != reservation.account_id:
            raise Unauthenticated("Incorrect API key provided")
        if reservation.job_id in account.holds:  # a job holds once (a batch line released twice)
            return Balance(MicroCredits(account.available), MicroCredits(account.held))
        periods = reservation.periods
        check_hold(reservation, account.available, revoked=key.revoked, expires_at=key.expires_at,
                   limits=key.limits, spend=key.spend)
        account.available -= reservation.amount
        account.held += reservation.amount
        account.holds[reservation.job_id] = _Hold(reservation.amount, reservation.key_id, periods,
                                                  reservation.expires_at)
        if key.limits:
            _count(key, periods, reservation.amount)
        return Balance(MicroCredits(account.available), MicroCredits(account.held))

    async def cancel(self, job_id: str, account_id: int) -> None:
        account = self._accounts.get(account_id)
        hold = account.holds.pop(job_id, None) if account is not None else None
        if account is None or hold is None:
            return
        account.available += hold.amount
        account.held -= hold.amount
        self._count_key(hold, -hold.amount, seq=None)

    async def balance(self, account_id: int) -> Balance:
        account = self._accounts.get(account_id) or await self._load_account(account_id)
        return Balance(MicroCredits(account.available), MicroCredits(account.held))

    async def outstanding(self) -> tuple[int, MicroCredits]:
        count = sum(len(account.holds) for account in self._accounts.values())
        return count, MicroCredits(sum(account.held for account in self._accounts.values()))

    async def overdue(self, now: float, *, limit: int = 500) -> list[tuple[str, int]]:
        found = [(job, account_id) for account_id, account in self._accounts.items()
                 for job, hold in account.holds.items() if hold.expires_at < now]
        return found[:limit]

    # following the ledger

    async def apply(self, changes: Sequence[AccountChange]) -> None:
        for change in changes:
            pending = self._loading.get(change.account_id)
            if pending is not None:
                pending.append(change)
                continue
            account = self._accounts.get(change.account_id)
            if account is not None:  # else: it loads from a ledger that has the change
                self._apply(account, change)

    def _apply(self, account: _Account, change: AccountChange) -> None:
        if change.seq <= account.seq:
            return  # the snapshot it was loaded from has it
        now = time.monotonic()
        if change.credit and change.seq not in account.credited:
            account.credited.add(change.seq)
            account.available += change.credit
        for held in change.held:
            self._apply_held(account, held, change.seq, now)
        for settled in change.settled:
            if settled.job_id in account.settled:
                continue
            account.settled[settled.job_id] = now
            self._give_back(account, settled.job_id, change.seq)
            account.available -= settled.cost
            self._count_key(_Hold(settled.cost, settled.key_id, settled.periods, 0.0), settled.cost, seq=change.seq)
        for released in change.released:
            if released.job_id in account.released:
                continue
            account.released[released.job_id] = now
            self._give_back(account, released.job_id, change.seq)
        if len(account.settled) + len(account.released) > 10_000:
            _forget_old(account, now)

    def _give_back(self, account: _Account, job_id: str, seq: int) -> None:
        """Close the job's hold, if the mirror has it: its amount back to available."""
        hold = account.holds.pop(job_id, None)
        if hold is not None:
            account.available += hold.amount
            account.held -= hold.amount
            self._count_key(hold, -hold.amount, seq=seq)

    def _apply_held(self, account: _Account, held: Held, seq: int, now: float) -> None:
        hold = account.holds.get(held.job_id)
        if hold is not None:
            hold.journaled = True
            key = self._keys.get(hold.key_id) if hold.key_id is not None else None
            if hold.counted_at_load and key is not None and key.limits and seq <= key.seq:
                _count(key, hold.periods, -hold.amount)  # the ledger's counters loaded had it too
            hold.counted_at_load = False
            return
        if held.job_id in account.settled or held.job_id in account.released:
            return  # recorded after it ended: its end is applied already
        # The mirror lost it (it was loaded after the hold was taken): take it now.
        hold = _Hold(held.amount, held.key_id, held.periods, held.expires_at, journaled=True)
        account.holds[held.job_id] = hold
        account.available -= held.amount
        account.held += held.amount
        self._count_key(hold, held.amount, seq=seq)

    def _count_key(self, hold: _Hold, delta: int, *, seq: int | None) -> None:
        """Move the hold's key's counters by ``delta``, for a change at
        ``seq`` (None: one only this mirror knows of), unless the key was
        loaded from a ledger that has it already."""
        key = self._keys.get(hold.key_id) if hold.key_id is not None else None
        if key is None or not key.limits:
            return
        if seq is not None and seq <= key.seq and not (hold.counted_at_load and delta < 0):
            return
        _count(key, hold.periods, delta)

    # loading

    async def forget_key(self, key_id: int) -> None:
        self._keys.pop(key_id, None)

    async def _load_account(self, account_id: int) -> _Account:
        task = self._account_loads.get(account_id)
        if task is None:
            self._loading[account_id] = []
            task = asyncio.create_task(self._read_account(account_id), name=f"load account {account_id}")
            self._account_loads[account_id] = task
            task.add_done_callback(lambda _: self._account_loads.pop(account_id, None))
        await asyncio.shield(task)
        return self._accounts[account_id]

    async def _read_account(self, account_id: int) -> None:
        try:
            snapshot = await self._snapshots.account(account_id)
            if snapshot is None:
                raise AccountNotFound(f"No account {account_id}")
            account = _from_snapshot(snapshot)
            self._accounts[account_id] = account
            for change in self._loading.get(account_id, ()):
                self._apply(account, change)
        finally:
            self._loading.pop(account_id, None)

    async def _load_key(self, key_id: int, now: float) -> _Key:
        task = self._key_loads.get(key_id)
        if task is None:
            task = asyncio.create_task(self._read_key(key_id, now), name=f"load key {key_id}")
            self._key_loads[key_id] = task
            task.add_done_callback(lambda _: self._key_loads.pop(key_id, None))
        await asyncio.shield(task)
        return self._keys[key_id]

    async def _read_key(self, key_id: int, now: float) -> None:
        snapshot = await self._snapshots.key(key_id, now)
        if snapshot is None:
            raise Unauthenticated("Incorrect API key provided")
        key = _key_from(snapshot)
        account = self._accounts.get(snapshot.account_id)
        if key.limits and account is not None:
            # Holds the ledger has not recorded yet are not in its counters.
            for hold in account.holds.values():
                if hold.key_id == key_id and not hold.journaled:
                    hold.counted_at_load = True
                    _count(key, hold.periods, hold.amount)
        self._keys[key_id] = key


def _count(key: _Key, periods: Sequence[str], delta: int) -> None:
    for period in periods:
        key.spend[period] = key.spend.get(period, 0) + delta


def _from_snapshot(snapshot: AccountSnapshot) -> _Account:
    account = _Account(snapshot.available, snapshot.held, snapshot.seq)
    for hold in snapshot.holds:
        account.holds[hold.job_id] = _Hold(hold.amount, hold.key_id, hold.periods, hold.expires_at, journaled=True)
    return account


def _key_from(snapshot: KeySnapshot) -> _Key:
    return _Key(snapshot.account_id, snapshot.revoked, snapshot.expires_at, snapshot.limits, snapshot.seq,
                dict(snapshot.spend))


def _forget_old(account: _Account, now: float) -> None:
    for done in (account.settled, account.released):
        for job in [job for job, when in done.items() if now - when > REMEMBER]:
            del done[job]

