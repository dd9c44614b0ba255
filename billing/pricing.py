"""What a job costs: usage × the price snapshotted at admission (input and
output tokens, and images generated), rounded up once, to the next whole
micro-credit."""

from __future__ import annotations

from decimal import localcontext

from schema.jobs import Price, Usage
from schema.money import MicroCredits, round_up, token_cost, unit_cost

# Marked-up list prices can have twenty-odd digits; times a token count that
# passes Decimal's default 28, which would round before the rounding up.
COST_PRECISION = 100


def cost_of(usage: Usage, price: Price) -> MicroCredits:
    with localcontext(prec=COST_PRECISION):
        exact = (token_cost(usage.input_tokens, price.input_per_mtok) + token_cost(usage.output_tokens, price.output_per_mtok)
                 + unit_cost(usage.images, price.per_image))
    return round_up(exact)
