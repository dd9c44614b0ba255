"""Money: integer micro-credits, never floats.

One credit is 1,000,000 micro-credits. Prices are quoted in credits per
million tokens, so a price of ``p`` credits per million tokens costs exactly
``p`` micro-credits per token; other units (an image) are priced in credits
each.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import Any, NewType

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


def credits_json_schema(low: Decimal, high: Decimal, *, zero: bool = True) -> dict[str, Any]:
    """The OpenAPI description of an amount of credits a request sends: a
    JSON number or a decimal string, from ``low`` to ``high``, to the
    micro-credit. Strings are described up to a billion, exclusive; a
    number's decimals cannot be bounded in JSON Schema (``multipleOf`` is
    inexact in binary floating point), so the description says it."""
    if zero:
        digits = r"([0-9]{1,9}(\.[0-9]{0,6})?|\.[0-9]{1,6})"
    else:  # a non-zero digit somewhere, among at most six decimals
        fraction = "|".join(f"{'0' * zeros}[1-9][0-9]{{0,{5 - zeros}}}" for zeros in range(6))
        digits = rf"(0*[1-9][0-9]{{0,8}}(\.[0-9]{{0,6}})?|0*\.({fraction}))"
    sign = "[+-]?" if low < 0 else r"\+?"
    number: dict[str, Any] = {"type": "number", "minimum": float(low), "maximum": float(high)}
    if not zero:
        number["not"] = {"const": 0}
    return {
        "anyOf": [number, {"type": "string", "pattern": f"^{sign}{digits}$"}],
        "description": "Credits, exact to the micro-credit (at most 6 decimals): a decimal string or a JSON number.",
    }
