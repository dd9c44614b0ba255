"""What a hold must pass, whichever mirror takes it: the key usable, the
account's available credit enough, and every limit of the key left room.
The Redis mirror's script checks the same, in the same order, and its
refusals become these same errors."""

from __future__ import annotations

from collections.abc import Mapping

from billing.balances import PERIOD_KINDS, Reservation
from billing.limits import KeyLimits, check_usable, exceeded
from schema.errors import InsufficientCredits
from schema.money import micros_to_credits


def insufficient(amount: int, available: int) -> InsufficientCredits:
    return InsufficientCredits(
        f"This request can cost up to {micros_to_credits(amount)} credits and your account has "
        f"{micros_to_credits(max(available, 0))} available: lower max_tokens or top up"
    )


def check_hold(reservation: Reservation, available: int, *, revoked: bool, expires_at: float | None,
               limits: KeyLimits, spend: Mapping[str, int]) -> None:
    check_usable(revoked=revoked, expires_at=expires_at, now=reservation.now)
    amount = reservation.amount
    if available < amount:
        raise insufficient(amount, available)
    if not limits:
        return
    for kind, period in zip(PERIOD_KINDS, reservation.periods, strict=True):
        limit = limits.of(kind)
        spent = spend.get(period, 0)
        if limit is not None and spent + amount > limit:
            raise exceeded(kind, amount, limit, spent)
