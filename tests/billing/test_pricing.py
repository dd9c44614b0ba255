"""Money arithmetic: exact, integer, never float, always rounded up."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.admission import MAX_HOLD, check_holdable
from billing.pricing import charge, cost_of
from schema.errors import InsufficientCredits
from schema.jobs import USAGE_CEILING, Price, Usage
from schema.money import credits_to_micros, micros_to_credits

prices = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)
tokens = st.integers(min_value=0, max_value=10_000_000)


def test_known_costs() -> None:
    price = Price(input_per_mtok=Decimal("1.00"), output_per_mtok=Decimal("2.00"))
    assert cost_of(Usage(input_tokens=5, output_tokens=4), price) == 13
    assert cost_of(Usage(input_tokens=1, output_tokens=0), Price(input_per_mtok=Decimal("0.15"))) == 1  # 0.15 rounds up
    assert cost_of(Usage(input_tokens=1_000_000, output_tokens=0), Price(input_per_mtok=Decimal("3"))) == 3_000_000


def test_long_prices_are_not_rounded_before_rounding_up() -> None:
    # 3 × this price is 1.0000000000000000000000000002: 29 digits, one past Decimal's default precision.
    price = Price(input_per_mtok=Decimal("0.3333333333333333333333333334"))
    assert cost_of(Usage(input_tokens=3, output_tokens=0), price) == 2


@given(tokens, tokens, prices, prices)
def test_cost_is_the_exact_amount_rounded_up(input_tokens: int, output_tokens: int, input_price: Decimal,
                                             output_price: Decimal) -> None:
    cost = cost_of(Usage(input_tokens=input_tokens, output_tokens=output_tokens),
                   Price(input_per_mtok=input_price, output_per_mtok=output_price))
    exact = input_tokens * input_price + output_tokens * output_price
    assert isinstance(cost, int)
    assert cost - 1 < exact <= cost


@given(tokens, tokens, tokens, prices)
def test_cost_grows_with_usage(a: int, b: int, extra: int, price: Decimal) -> None:
    flat = Price(input_per_mtok=price, output_per_mtok=price)
    more = Usage(input_tokens=a + extra, output_tokens=b)
    assert cost_of(Usage(input_tokens=a, output_tokens=b), flat) <= cost_of(more, flat)


@given(st.integers(min_value=0, max_value=10**15))
def test_credit_strings_round_trip(micros: int) -> None:
    assert credits_to_micros(micros_to_credits(micros)) == micros


@pytest.mark.parametrize("amount", ["0.0000001", "1e-9"])
def test_sub_micro_amounts_are_refused(amount: str) -> None:
    with pytest.raises(ValueError):
        credits_to_micros(amount)


@given(tokens, tokens, prices, prices, st.none() | st.integers(min_value=0, max_value=10**13))
def test_a_charge_never_exceeds_its_hold_and_misses_nothing_below_it(
        input_tokens: int, output_tokens: int, input_price: Decimal, output_price: Decimal, hold: int | None) -> None:
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    price = Price(input_per_mtok=input_price, output_per_mtok=output_price)
    charged = charge(usage, price, hold)
    assert charged.cost + charged.absorbed == cost_of(usage, price)
    assert charged.absorbed >= 0
    assert hold is None or charged.cost <= hold
    if hold is None or cost_of(usage, price) <= hold:
        assert charged.absorbed == 0


def test_reported_counts_are_kept_within_a_64_bit_column() -> None:
    usage = Usage(input_tokens=10**30, output_tokens=2**70, images=10**20)
    assert (usage.input_tokens, usage.output_tokens, usage.images) == (USAGE_CEILING,) * 3


def test_a_hold_no_account_could_cover_is_refused_before_the_ledger() -> None:
    check_holdable(MAX_HOLD)
    with pytest.raises(InsufficientCredits, match="more than any account can hold"):
        check_holdable(MAX_HOLD + 1)  # type: ignore[arg-type]
