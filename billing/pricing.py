"""What a job costs: usage × the price snapshotted at admission, rounded up
to the next whole micro-credit."""

from __future__ import annotations

from schema.jobs import Price, Usage
from schema.money import MicroCredits, round_up, token_cost


def cost_of(usage: Usage, price: Price) -> MicroCredits:
    return round_up(token_cost(usage.input_tokens, price.input_per_mtok) + token_cost(usage.output_tokens, price.output_per_mtok))
