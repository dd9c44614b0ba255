"""What a job costs, computed here and nowhere else: usage × the price
snapshotted at admission (input and output tokens, and images generated),
rounded up once, to the next whole micro-credit, and never more than the
job's hold. The worker, the ingress (``usage.cost``, ``x-gatewayz-cost``)
and settlement all charge through ``charge``, so what a client is shown is
what it pays."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import localcontext

from schema.jobs import Price, Usage
from schema.money import MicroCredits, round_up, token_cost, unit_cost

# Marked-up list prices can have twenty-odd digits; times a token count that
# passes Decimal's default 28, which would round before the rounding up.
COST_PRECISION = 100


def cost_of(usage: Usage, price: Price) -> MicroCredits:
    with localcontext(prec=COST_PRECISION):
        exact = (token_cost(usage.input_tokens, price.input_per_mtok)
                 + token_cost(usage.output_tokens, price.output_per_mtok)
                 + unit_cost(usage.images, price.per_image))
    return round_up(exact)


@dataclass(frozen=True, slots=True)
class Charge:
    cost: MicroCredits  # what the account pays
    absorbed: MicroCredits  # what the usage cost beyond the hold: the gateway's loss, not the account's


def charge(usage: Usage, price: Price, hold: int | None) -> Charge:
    """The usage's cost, capped at ``hold``: the hold is the most a request
    may cost, whatever its upstream reports (None: a job from before holds
    travelled with it, charged uncapped)."""
    cost = cost_of(usage, price)
    if hold is None or cost <= hold:
        return Charge(cost, MicroCredits(0))
    return Charge(MicroCredits(hold), MicroCredits(cost - hold))
