"""The balances admission reserves against, off the database.

The ledger (``billing.ledger``) is the truth; ``Balances`` mirrors what a
hold needs of it, so that taking one is a step in memory (embedded) or one
Redis script (distributed) instead of database statements:
- each account's ``available`` and ``held`` credit and its open holds;
- each key's account, revocation, expiry and spending limits, and, for a key
  with limits, what it has counted in its current periods.

An account or key is loaded from the database the first time a hold needs
it, and from then on the mirror follows the ledger: every database
transaction that moves an account's credit bumps its ``seq`` and is applied
to the mirror after it commits (an ``AccountChange``). A change whose
``seq`` the loaded snapshot already includes is skipped; one that commits
while the account is being loaded is kept and replayed once the load lands;
a job's change is applied once however often it is sent (a settlement
redelivered after its consumer died is sent again). Holds are taken in the
mirror first; the ledger learns of them when their job settles or is
released (embedded), or from the hold journal first (distributed).

So a hold never touches the database, and the mirror never lets an account
reserve more than the ledger, plus the holds still open, leaves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from billing.limits import KeyLimits, periods_at
from schema.money import MicroCredits

PERIOD_KINDS = ("day", "month", "total")


@dataclass(frozen=True, slots=True)
class Balance:
    available: MicroCredits
    held: MicroCredits

    @property
    def total(self) -> MicroCredits:
        return MicroCredits(self.available + self.held)


@dataclass(frozen=True, slots=True)
class Reservation:
    """A hold a request asks for: ``amount`` for ``job_id``, made at ``now``
    (which fixes the key's periods it counts in), open until ``expires_at``."""

    job_id: str
    account_id: int
    key_id: int
    amount: int
    now: float
    expires_at: float

    @property
    def periods(self) -> tuple[str, ...]:
        return tuple(periods_at(self.now).values())


@dataclass(frozen=True, slots=True)
class Held:
    """A hold the ledger recorded (the hold journal, or a settlement that
    found it unrecorded): the mirror made it first, unless it lost it."""

    job_id: str
    amount: int
    key_id: int | None
    periods: tuple[str, ...]
    expires_at: float


@dataclass(frozen=True, slots=True)
class Settled:
    """A job charged ``cost``: its hold, if the mirror has it, is closed."""

    job_id: str
    cost: int
    key_id: int | None
    periods: tuple[str, ...]  # where its key counts it: its hold's


@dataclass(frozen=True, slots=True)
class Released:
    """A job's hold closed without a charge (it never ran, or never reported)."""

    job_id: str


@dataclass(frozen=True, slots=True)
class AccountChange:
    """What one committed database transaction did to one account's credit.
    ``credit``: credit added (negative: taken) outside any job: a grant,
    a top-up, a coupon, an adjustment, expiring trial credit."""

    account_id: int
    seq: int
    credit: int = 0
    held: tuple[Held, ...] = ()
    settled: tuple[Settled, ...] = ()
    released: tuple[Released, ...] = ()


# A hold a snapshot finds still open: the same facts as one the ledger recorded.
OpenHold = Held


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """An account as the ledger has it at ``seq``, with its open holds."""

    account_id: int
    available: int
    held: int
    seq: int
    holds: tuple[OpenHold, ...] = ()


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    """A key as the ledger has it, read when its account was at ``seq``;
    ``spend``: what a key with limits has counted per period (current ones)."""

    key_id: int
    account_id: int
    revoked: bool
    expires_at: float | None
    limits: KeyLimits
    seq: int
    spend: dict[str, int] = field(default_factory=dict)


class Snapshots(Protocol):
    """Where the mirror loads from: the ledger (``billing.snapshots``)."""

    async def account(self, account_id: int) -> AccountSnapshot | None: ...

    async def key(self, key_id: int, now: float) -> KeySnapshot | None: ...


class Balances(Protocol):
    async def reserve(self, reservation: Reservation) -> Balance:
        """Take a hold, or raise (taking nothing): ``InsufficientCredits``,
        ``KeyLimitExceeded``, ``KeyRevoked``, ``KeyExpired``, or
        ``Unauthenticated`` for a key that is not the account's."""
        ...

    async def cancel(self, job_id: str, account_id: int) -> None:
        """Give back a hold whose job was never queued (no ledger record of
        it exists: nothing will settle it)."""
        ...

    async def apply(self, changes: Sequence[AccountChange]) -> None:
        """Follow committed ledger transactions."""
        ...

    async def balance(self, account_id: int) -> Balance: ...

    async def overdue(self, now: float, *, limit: int = 500) -> list[tuple[str, int]]:
        """Open holds whose expiry has passed, as ``(job, account)``."""
        ...

    async def forget_key(self, key_id: int) -> None:
        """Reload the key on its next hold (its limits, expiry or revocation changed)."""
        ...

    async def outstanding(self) -> tuple[int, MicroCredits]:
        """The open holds and what they hold in all (for metrics, read at scrape time)."""
        ...

    async def aclose(self) -> None: ...
