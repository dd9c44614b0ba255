"""Money: integer micro-credits, never floats.

One credit is 1,000,000 micro-credits. Prices are quoted in credits per
million tokens, so a price of ``p`` credits per million tokens costs exactly
``p`` micro-credits per token; other units (an image) are priced in credits
each.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import NewType

MicroCredits = NewType("MicroCredits", int)

MICROS_PER_CREDIT = 1_000_000


def credits_to_micros(credits: Decimal | str | int) -> MicroCredits:
    """Exact conversion; refuses amounts finer than a micro-credit."""
    amount = Decimal(credits) * MICROS_PER_CREDIT
    if amount != amount.to_integral_value():
        raise ValueError(f"{credits} credits is not a whole number of micro-credits")
    return MicroCredits(int(amount))


def micros_to_credits(micros: int) -> str:
    """A decimal string for APIs (``"4.999873"``), exact and float-free."""
    return str((Decimal(micros) / MICROS_PER_CREDIT).quantize(Decimal("0.000001")))


def token_cost(tokens: int, price_per_mtok: Decimal) -> Decimal:
    """Exact cost in micro-credits of ``tokens`` at ``price_per_mtok`` credits per million."""
    return Decimal(tokens) * price_per_mtok


def unit_cost(units: int, credits_each: Decimal) -> Decimal:
    """Exact cost in micro-credits of ``units`` things at ``credits_each`` credits apiece."""
    return Decimal(units) * credits_each * MICROS_PER_CREDIT


def round_up(micros: Decimal) -> MicroCredits:
    """Charges round up to the next whole micro-credit."""
    return MicroCredits(int(micros.to_integral_value(rounding=ROUND_CEILING)))
