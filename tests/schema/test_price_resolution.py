"""Which price a model gets, resolved once at config load: the entry's
explicit prices, else the price list's (converted and marked up), else none,
which refuses the config unless it says unpriced models are free."""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from scheduler.catalog import Catalog
from schema.catalog import ConfigError, GatewayConfig, parse_config
from schema.jobs import Price
from schema.prices import ListPrice


class FakeList:
    """A price list with a few entries, US dollars per million tokens."""

    name = "list"

    def __init__(self) -> None:
        self.prices = {
            ("openai", "gpt-4o-mini"): ("0.15", "0.60"),
            ("openai", "gpt-4o"): ("2.50", "10.00"),
            ("anthropic", "claude-x"): ("3", "15"),
        }

    def knows(self, provider: str) -> bool:
        return any(provider == known for known, _ in self.prices)

    def lookup(self, provider: str, model: str) -> ListPrice | None:
        found = self.prices.get((provider, model))
        if found is None:
            return None
        return ListPrice(provider, model, Decimal(found[0]), Decimal(found[1]))


PROVIDERS = {
    "openai": {"base_url": "http://openai/v1", "models": ["gpt-4o", "gpt-4o-mini"]},  # named like a list provider
    "acme": {"base_url": "http://acme/v1", "models": ["house-model"]},  # unknown to the list
    "proxy": {"base_url": "http://proxy/v1", "price_provider": "openai"},  # priced as openai's models
}


def config(models: dict[str, Any], pricing: dict[str, Any] | None = None, credits_per_usd: str = "1",
           providers: dict[str, Any] | None = None) -> GatewayConfig:
    document: dict[str, Any] = {"providers": providers or PROVIDERS, "models": models,
                                "pricing": {"unpriced": "free", **(pricing or {})}}
    return parse_config(document, {}, credits_per_usd=Decimal(credits_per_usd), price_list=FakeList())


def explicit(input_price: str | None = None, output_price: str | None = None) -> dict[str, Decimal]:
    prices = {"input_price_per_mtok": input_price, "output_price_per_mtok": output_price}
    return {key: Decimal(value) for key, value in prices.items() if value is not None}


@pytest.mark.parametrize(
    ("entry", "expected", "source"),
    [
        # explicit prices win over the list, and are not marked up
        ({"providers": ["openai"], **explicit("1", "2")}, ("1", "2"), "config"),
        # else the list, by the candidate provider's name and the model id
        ({"providers": ["openai"]}, ("0.15", "0.6"), "list:openai:gpt-4o-mini"),
        # one explicit side overrides that side only
        ({"providers": ["openai"], **explicit(input_price="0.10")}, ("0.10", "0.6"),
         "config+list:openai:gpt-4o-mini"),
        ({"providers": ["openai"], **explicit(output_price="0.50")}, ("0.15", "0.50"),
         "config+list:openai:gpt-4o-mini"),
        # an explicit price_source names the list entry, over the provider's own
        ({"providers": ["openai"], "price_source": "anthropic:claude-x"}, ("3", "15"), "list:anthropic:claude-x"),
        ({"providers": ["acme"], "price_source": "openai:gpt-4o"}, ("2.5", "10"), "list:openai:gpt-4o"),
        # a provider's price_provider, with the provider's upstream id
        ({"providers": ["proxy"], "upstream_ids": {"proxy": "gpt-4o"}}, ("2.5", "10"), "list:openai:gpt-4o"),
        # candidates in order: the first the list prices
        ({"providers": ["acme", "openai"]}, ("0.15", "0.6"), "list:openai:gpt-4o-mini"),
        # without a list price, a side left out is 0
        ({"providers": ["acme"], **explicit(output_price="2")}, ("0", "2"), "config"),
        # nothing at all: unpriced (free here; refused by default)
        ({"providers": ["acme"]}, ("0", "0"), "unpriced"),
    ],
)
def test_resolution_order(entry: dict[str, Any], expected: tuple[str, str], source: str) -> None:
    resolved = config({"gpt-4o-mini": entry}).prices["gpt-4o-mini"]
    assert resolved.price == Price(input_per_mtok=Decimal(expected[0]), output_per_mtok=Decimal(expected[1]))
    assert resolved.source == source


@pytest.mark.parametrize(
    ("pricing", "entry", "credits_per_usd", "expected"),
    [
        ({}, {}, "1", ("0.15", "0.6")),
        ({"markup_percent": Decimal("10")}, {}, "1", ("0.165", "0.66")),
        ({"markup_percent": 10}, {"markup_percent": Decimal("50")}, "1", ("0.225", "0.9")),  # the entry's markup wins
        ({"markup_percent": 10}, {"markup_percent": 0}, "1", ("0.15", "0.6")),
        ({}, {}, "100", ("15", "60")),  # credits are cents
        ({"markup_percent": Decimal("12.5")}, {}, "0.8", ("0.135", "0.54")),
    ],
)
def test_list_prices_become_credits_then_get_the_markup(
    pricing: dict[str, Any], entry: dict[str, Any], credits_per_usd: str, expected: tuple[str, str]
) -> None:
    resolved = config({"gpt-4o-mini": {"providers": ["openai"], **entry}}, pricing,
                      credits_per_usd).prices["gpt-4o-mini"]
    assert resolved.price == Price(input_per_mtok=Decimal(expected[0]), output_per_mtok=Decimal(expected[1]))


def test_markup_applies_to_the_list_side_only() -> None:
    entry = {"providers": ["openai"], **explicit(input_price="1")}
    resolved = config({"gpt-4o-mini": entry}, {"markup_percent": 100}).prices["gpt-4o-mini"]
    assert resolved.price == Price(input_per_mtok=Decimal("1"), output_per_mtok=Decimal("1.2"))


def test_models_a_provider_lists_outside_any_entry_are_priced_too() -> None:
    resolved = config({}).prices
    assert resolved["openai/gpt-4o"].price == Price(input_per_mtok=Decimal("2.5"), output_per_mtok=Decimal("10"))
    assert resolved["openai/gpt-4o"].source == "list:openai:gpt-4o"
    assert resolved["acme/house-model"].source == "unpriced"
    assert resolved["mock/echo"].source == "config"  # the built-in mock keeps its explicit price


def test_routing_and_listing_use_the_resolved_prices() -> None:
    catalog = Catalog(config({"mini": {"providers": ["openai"], "upstream_ids": {"openai": "gpt-4o-mini"}}},
                             {"markup_percent": 100}))
    doubled = Price(input_per_mtok=Decimal("0.3"), output_per_mtok=Decimal("1.2"))
    assert catalog.route("mini").price == doubled
    assert catalog.route("openai/gpt-4o-mini").price == doubled  # pinned, outside the entry: the same list price
    assert catalog.route("gpt-4o").price == Price(input_per_mtok=Decimal("5"), output_per_mtok=Decimal("20"))
    listed = catalog.find("openai/gpt-4o")
    assert listed is not None and listed.price is not None and listed.price.source == "list:openai:gpt-4o"


def test_unpriced_models_refuse_the_config_by_default() -> None:
    document = {"providers": PROVIDERS, "models": {"gpt-4o-mini": {"providers": ["openai"]}}}
    with pytest.raises(ConfigError, match=r"no price for acme/house-model\b.*unpriced = \"free\""):
        parse_config(document, {}, price_list=FakeList())
    house_model = {"providers": ["acme"], **explicit("0", "0")}
    priced = {**document, "models": {**document["models"], "acme/house-model": house_model}}
    assert parse_config(priced, {}, price_list=FakeList()).prices["acme/house-model"].source == "config"


def test_free_unpriced_models_are_each_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="gatewayz.config"):
        config({})
    assert [r.getMessage() for r in caplog.records if "no price" in r.getMessage()] == [
        'model acme/house-model has no price and is served FREE ([pricing] unpriced = "free")']


@pytest.mark.parametrize(
    ("models", "pricing", "providers", "message"),
    [
        ({}, {"markup_percent": -1}, None, r"pricing\.markup_percent\n.*greater than or equal to 0"),
        ({"m": {"providers": ["openai"], "markup_percent": Decimal("-0.5")}}, {}, None,
         r"markup_percent\n.*greater than or equal to 0"),
        ({}, {"markup_percent": Decimal("Infinity")}, None, "finite"),
        ({}, {"markup": 5}, None, "markup"),
        ({}, {"unpriced": "maybe"}, None, "unpriced"),
        ({"m": {"providers": ["acme"], "price_source": "opnai:gpt-4o-mini"}}, {}, None, "list has no provider 'opnai'"),
        ({"m": {"providers": ["acme"], "price_source": "openai:gpt-9"}}, {}, None,
         "no token price for 'gpt-9' under 'openai'"),
        ({"m": {"providers": ["acme"], "price_source": "gpt-4o-mini"}}, {}, None, "provider:model"),
        ({"m": {"providers": ["acme"], "price_source": "openai:"}}, {}, None, "provider:model"),
        ({"m": {"providers": ["openai"], "price_source": "openai:gpt-4o", **explicit("1", "2")}}, {}, None,
         "price_source would have no effect"),
        ({"m": {"providers": ["openai"], "markup_percent": 5, **explicit("1", "2")}}, {}, None,
         "markup_percent would have no effect"),
        ({"m": {"providers": ["acme"], "markup_percent": 5, **explicit("1")}}, {}, None,
         "markup_percent applies to list prices, and it has none"),
        ({}, {}, {"acme": {"base_url": "http://acme/v1", "price_provider": "opnai"}},
         "price_provider 'opnai' is not a provider of list"),
    ],
)
def test_bad_pricing_config_says_what_is_wrong(
    models: dict[str, Any], pricing: dict[str, Any], providers: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config(models, pricing, providers=providers)


def test_an_unknown_section_is_refused_not_ignored() -> None:
    with pytest.raises(ConfigError, match=r"unknown sections \['prcing'\]"):
        parse_config({"providers": {}, "prcing": {"markup_percent": 50}}, {}, price_list=FakeList())


@pytest.mark.parametrize("rate", ["0", "-1", "NaN"])
def test_the_exchange_rate_must_be_positive(rate: str) -> None:
    with pytest.raises(ConfigError, match="credits_per_usd"):
        config({}, credits_per_usd=rate)


def test_the_readme_example_loads_and_prices_as_it_says() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = re.search(r"### Providers and models \(TOML\)\n\n```toml\n(.*?)```", readme, re.S)
    assert example is not None
    prices = parse_config(tomllib.loads(example.group(1), parse_float=Decimal), {}).prices
    assert prices["fake-small"].source == "config"
    assert prices["mini"].source == "genai-prices:openai:gpt-4o-mini"  # 0.15 USD + 25 %
    assert prices["mini"].price == Price(input_per_mtok=Decimal("0.1875"), output_per_mtok=Decimal("0.75"))
    assert prices["eu-proxy/gpt-4o"].source == prices["openai/gpt-4o"].source == "genai-prices:openai:gpt-4o"
