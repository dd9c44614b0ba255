"""List prices from genai-prices' bundled table, made flat, and the exact
arithmetic that turns them into credits."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from decimal import Decimal, localcontext
from pathlib import Path

import pytest
from genai_prices import data_snapshot
from genai_prices.types import (
    ClauseEquals,
    ConditionalPrice,
    ModelInfo,
    ModelPrice,
    Provider,
    StartDateConstraint,
    Tier,
    TieredPrices,
    TimeOfDateConstraint,
)
from hypothesis import given
from hypothesis import strategies as st

from billing.pricing import cost_of
from schema.catalog import parse_config
from schema.jobs import Price, Usage
from schema.prices import GenaiPrices, ListPrice, sell_price

ROOT = Path(__file__).resolve().parents[2]


def model(model_id: str, prices: ModelPrice | list[ConditionalPrice]) -> ModelInfo:
    return ModelInfo(id=model_id, match=ClauseEquals(equals=model_id), prices=prices)


def price_list(*models: ModelInfo, as_of: datetime = datetime(2026, 6, 1, 12, tzinfo=UTC)) -> GenaiPrices:
    return GenaiPrices(as_of, providers=[Provider(id="acme", name="Acme", api_pattern="", models=list(models))])


def usd(value: str) -> Decimal:
    return Decimal(value)


# genai-prices' shapes, made flat


def test_a_plain_price() -> None:
    prices = price_list(model("m", ModelPrice(input_mtok=usd("0.5"), output_mtok=usd("1.5"),
                                              cache_read_mtok=usd("0.05"))))
    assert prices.lookup("acme", "m") == ListPrice("acme", "m", usd("0.5"), usd("1.5"))
    assert prices.lookup("ACME", "M") is not None  # the library matches case-insensitively
    assert prices.lookup("acme", "other") is None


def test_tiered_prices_charge_the_highest_tier() -> None:
    tiered = TieredPrices(base=usd("1.25"), tiers=[Tier(start=200_000, price=usd("2.5"))])
    listed = price_list(model("m", ModelPrice(input_mtok=tiered, output_mtok=usd("10")))).lookup("acme", "m")
    assert listed is not None
    assert (listed.input_usd_per_mtok, listed.output_usd_per_mtok) == (usd("2.5"), usd("10"))
    assert listed.notes == ("tiered prices: the highest tier",)


def test_time_of_day_prices_charge_the_highest_rate_of_the_day() -> None:
    off_peak = ModelPrice(input_mtok=usd("0.135"), output_mtok=usd("0.55"))
    peak = ModelPrice(input_mtok=usd("0.27"), output_mtok=usd("1.1"))
    daily = TimeOfDateConstraint(start_time=time(0, 30, tzinfo=UTC), end_time=time(16, 30, tzinfo=UTC))
    for hour in (3, 20):  # whenever the config is loaded
        rates = [ConditionalPrice(prices=off_peak), ConditionalPrice(constraint=daily, prices=peak)]
        listed = price_list(model("m", rates), as_of=datetime(2026, 6, 1, hour, tzinfo=UTC)).lookup("acme", "m")
        assert listed is not None
        assert (listed.input_usd_per_mtok, listed.output_usd_per_mtok) == (usd("0.27"), usd("1.1"))


def test_dated_prices_use_the_one_in_effect_and_report_a_later_change() -> None:
    history = [
        ConditionalPrice(prices=ModelPrice(input_mtok=usd("1"), output_mtok=usd("2"))),
        ConditionalPrice(constraint=StartDateConstraint(start_date=date(2026, 3, 1)),
                         prices=ModelPrice(input_mtok=usd("3"), output_mtok=usd("4"))),
        ConditionalPrice(constraint=StartDateConstraint(start_date=date(2026, 9, 1)),
                         prices=ModelPrice(input_mtok=usd("5"), output_mtok=usd("6"))),
    ]
    before = price_list(model("m", history), as_of=datetime(2026, 2, 1, tzinfo=UTC)).lookup("acme", "m")
    now = price_list(model("m", history), as_of=datetime(2026, 6, 1, tzinfo=UTC)).lookup("acme", "m")
    after = price_list(model("m", history), as_of=datetime(2026, 9, 1, tzinfo=UTC)).lookup("acme", "m")
    assert before is not None and now is not None and after is not None
    assert [(p.input_usd_per_mtok, p.output_usd_per_mtok) for p in (before, now, after)] == [
        (usd("1"), usd("2")), (usd("3"), usd("4")), (usd("5"), usd("6"))]
    assert now.notes == ("the list price changes on 2026-09-01: restart after then",)
    assert after.notes == ()


def test_a_time_of_day_price_older_than_the_current_dated_price_no_longer_applies() -> None:
    peak = TimeOfDateConstraint(start_time=time(8, tzinfo=UTC), end_time=time(9, tzinfo=UTC))
    history = [
        ConditionalPrice(prices=ModelPrice(input_mtok=usd("1"), output_mtok=usd("1"))),
        ConditionalPrice(constraint=peak, prices=ModelPrice(input_mtok=usd("9"), output_mtok=usd("9"))),
        ConditionalPrice(constraint=StartDateConstraint(start_date=date(2026, 1, 1)),
                         prices=ModelPrice(input_mtok=usd("2"), output_mtok=usd("2"))),
    ]
    listed = price_list(model("m", history)).lookup("acme", "m")
    assert listed is not None and listed.input_usd_per_mtok == usd("2")


def test_a_missing_side_is_free_and_a_model_without_token_prices_has_no_price() -> None:
    prices = price_list(model("embed", ModelPrice(input_mtok=usd("0.02"))),
                        model("speech", ModelPrice(input_audio_mtok=usd("40"))))
    assert prices.lookup("acme", "embed") == ListPrice("acme", "embed", usd("0.02"), Decimal(0))
    assert prices.lookup("acme", "speech") is None


def test_floats_go_through_their_decimal_repr() -> None:
    listed = price_list(model("m", ModelPrice(input_mtok=0.1, output_mtok=0.3))).lookup("acme", "m")  # type: ignore[arg-type]
    assert listed is not None
    assert (listed.input_usd_per_mtok, listed.output_usd_per_mtok) == (Decimal("0.1"), Decimal("0.3"))


# the bundled table


@pytest.fixture
def someone_elses_snapshot() -> Iterator[None]:
    """What genai-prices' auto-updater, started by any library in the process, does."""
    fake = Provider(id="openai", name="OpenAI", api_pattern="",
                    models=[model("gpt-4o-mini", ModelPrice(input_mtok=usd("99"), output_mtok=usd("99")))])
    data_snapshot.set_custom_snapshot(data_snapshot.DataSnapshot(providers=[fake], from_auto_update=True))
    yield
    data_snapshot.set_custom_snapshot(None)


def test_the_bundled_table_prices_openai_models() -> None:
    prices = GenaiPrices()
    assert prices.knows("openai") and prices.knows("anthropic") and not prices.knows("acme")
    listed = prices.lookup("openai", "gpt-4o-mini-2024-07-18")  # a dated id finds its model
    assert listed is not None
    assert (listed.provider, listed.model) == ("openai", "gpt-4o-mini")
    assert (listed.input_usd_per_mtok, listed.output_usd_per_mtok) == (usd("0.15"), usd("0.6"))


@pytest.mark.usefixtures("someone_elses_snapshot")
def test_prices_come_from_the_bundled_table_even_if_the_library_was_updated() -> None:
    listed = GenaiPrices().lookup("openai", "gpt-4o-mini")
    assert listed is not None and listed.input_usd_per_mtok == usd("0.15")


def test_resolving_prices_starts_no_updater() -> None:
    config = parse_config({"providers": {"openai": {"base_url": "http://x/v1", "models": ["gpt-4o"]}}}, {})
    assert config.prices["openai/gpt-4o"].source == "genai-prices:openai:gpt-4o"
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("genai_prices")]


def test_prices_resolve_without_a_network() -> None:
    """In a fresh interpreter where every connection attempt fails."""
    script = textwrap.dedent("""
        import socket

        def refuse(*args, **kwargs):
            raise OSError("no network in this test")

        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse

        from schema.catalog import parse_config
        config = parse_config({"providers": {"openai": {"base_url": "http://x/v1", "models": ["gpt-4o-mini"]}}}, {})
        print(config.prices["openai/gpt-4o-mini"].price.input_per_mtok)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0.15"


# the arithmetic

prices = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)
rates = st.decimals(min_value=Decimal("0.000001"), max_value=10_000, places=6, allow_nan=False, allow_infinity=False)
markups = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False, allow_infinity=False)


def test_known_sell_prices() -> None:
    assert sell_price(usd("0.15"), Decimal(1), Decimal(0)) == Decimal("0.15")
    assert sell_price(usd("0.15"), Decimal(1), Decimal(20)) == Decimal("0.18")
    assert sell_price(usd("2.50"), Decimal(100), Decimal("7.5")) == Decimal("268.75")
    assert str(sell_price(usd("0.15"), Decimal(1), Decimal(20))) == "0.18"  # not 0.180
    assert str(sell_price(usd("10"), Decimal(1), Decimal(0))) == "10"  # never 1E+1


@given(prices, rates, markups)
def test_markup_never_lowers_a_price(price: Decimal, rate: Decimal, markup: Decimal) -> None:
    assert sell_price(price, rate, markup) >= sell_price(price, rate, Decimal(0)) == price * rate


@given(prices, rates, markups, markups)
def test_more_markup_never_costs_less(price: Decimal, rate: Decimal, a: Decimal, b: Decimal) -> None:
    low, high = sorted((a, b))
    assert sell_price(price, rate, low) <= sell_price(price, rate, high)


@given(prices, rates, markups)
def test_conversion_and_markup_round_trip_exactly(price: Decimal, rate: Decimal, markup: Decimal) -> None:
    sold = sell_price(price, rate, markup)
    with localcontext() as exact:
        exact.prec = 100
        assert sold / (1 + markup / 100) / rate == price
    assert Decimal(format(sold, "f")) == sold and "E" not in format(sold, "f")  # as /v1/models shows it


@given(st.integers(0, 10_000_000), st.integers(0, 10_000_000), prices, prices, rates, markups)
def test_a_charge_is_usage_at_the_marked_up_list_price_rounded_up(
    input_tokens: int, output_tokens: int, input_usd: Decimal, output_usd: Decimal, rate: Decimal, markup: Decimal
) -> None:
    price = Price(input_per_mtok=sell_price(input_usd, rate, markup),
                  output_per_mtok=sell_price(output_usd, rate, markup))
    charged = cost_of(Usage(input_tokens=input_tokens, output_tokens=output_tokens), price)
    with localcontext() as exact:
        exact.prec = 100
        owed = (input_tokens * input_usd + output_tokens * output_usd) * rate * (1 + markup / 100)
    assert charged - 1 < owed <= charged
