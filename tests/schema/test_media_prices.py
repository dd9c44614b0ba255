"""Per-image prices, resolved at config load like token prices: only ever
explicit (the price list has none), beside token prices from the config or
the list (GPT Image models report tokens too)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from scheduler.catalog import Catalog
from schema.catalog import ConfigError, GatewayConfig, parse_config
from schema.jobs import Price
from tests.schema.test_price_resolution import PROVIDERS, FakeList


def config(models: dict[str, Any], unpriced: str = "free") -> GatewayConfig:
    prices = FakeList()
    prices.prices[("openai", "gpt-image-1")] = ("5", "40")
    document = {"providers": {**PROVIDERS, "openai": {"base_url": "http://openai/v1", "models": ["gpt-image-1"]}},
                "models": models, "pricing": {"unpriced": unpriced}}
    return parse_config(document, {}, price_list=prices)


@pytest.mark.parametrize(
    ("entry", "expected", "source"),
    [
        # a per-image price alone prices the model: its tokens are free
        ({"providers": ["acme"], "price_per_image": Decimal("0.04")}, ("0", "0", "0.04"), "config"),
        ({"providers": ["acme"], "price_per_image": Decimal("0.04"), "input_price_per_mtok": Decimal("5")},
         ("5", "0", "0.04"), "config"),
        # beside the list's token prices (a GPT Image model), with the list's markup on the tokens only
        ({"providers": ["openai"], "upstream_ids": {"openai": "gpt-image-1"}, "price_per_image": Decimal("0.01")},
         ("5", "40", "0.01"), "config+list:openai:gpt-image-1"),
        ({"providers": ["openai"], "upstream_ids": {"openai": "gpt-image-1"}, "price_per_image": Decimal("0.01"),
          "markup_percent": Decimal("10")}, ("5.5", "44", "0.01"), "config+list:openai:gpt-image-1"),
        # token prices only: images are free
        ({"providers": ["openai"], "upstream_ids": {"openai": "gpt-image-1"}}, ("5", "40", "0"),
         "list:openai:gpt-image-1"),
        # nothing at all: unpriced (free here; refused by default)
        ({"providers": ["acme"]}, ("0", "0", "0"), "unpriced"),
    ],
)
def test_per_image_prices_resolve_beside_token_prices(entry: dict[str, Any], expected: tuple[str, str, str],
                                                      source: str) -> None:
    resolved = config({"painter": {"kind": "images", **entry}}).prices["painter"]
    assert resolved.price == Price(input_per_mtok=Decimal(expected[0]), output_per_mtok=Decimal(expected[1]),
                                   per_image=Decimal(expected[2]))
    assert resolved.source == source


def test_an_image_model_with_only_a_per_image_price_is_not_unpriced() -> None:
    painter = {"kind": "images", "providers": ["acme"], "price_per_image": Decimal("0")}
    document = {"providers": {"acme": {"base_url": "http://acme/v1"}}, "models": {"painter": painter}}
    assert parse_config(document, {}, price_list=FakeList()).prices["painter"].source == "config"
    with pytest.raises(ConfigError, match="no price for painter"):
        parse_config({**document, "models": {"painter": {"kind": "images", "providers": ["acme"]}}}, {},
                     price_list=FakeList())


def test_routing_snapshots_the_per_image_price() -> None:
    catalog = Catalog(config({"painter": {"kind": "images", "providers": ["acme"],
                                          "price_per_image": Decimal("0.04")}}))
    assert catalog.route("painter").price.per_image == Decimal("0.04")
    assert catalog.route("acme/painter").price.per_image == Decimal("0.04")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"kind": "images", "price_per_image": Decimal("-0.01")}, "not negative"),
        ({"kind": "images", "price_per_image": Decimal("NaN")}, "finite"),
        ({"price_per_image": Decimal("0.04")}, "price_per_image applies to images models, not to kind 'chat'"),
        ({"kind": "embeddings", "price_per_image": Decimal("0.04")}, "not to kind 'embeddings'"),
    ],
)
def test_bad_per_image_prices_say_what_is_wrong(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config({"painter": {"providers": ["acme"], **entry}})


def test_the_built_in_mock_offers_embeddings_and_images_offline() -> None:
    resolved = parse_config({}, {}, price_list=FakeList())
    assert (resolved.models["mock/embed"].kind, resolved.models["mock/image"].kind) == ("embeddings", "images")
    assert resolved.prices["mock/embed"].price == Price(input_per_mtok=Decimal("0.10"))
    assert resolved.prices["mock/image"].price == Price(per_image=Decimal("0.01"))
