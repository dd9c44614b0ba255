"""What providers' own model lists add to a catalog: pure, priced when the
catalog is built, never served without a price unless the config says so."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices.types import ClauseEquals, ModelInfo, ModelPrice, Provider

from scheduler.catalog import Catalog, ModelQuery
from scheduler.listings import ProviderListing, UpstreamModel
from schema.catalog import parse_config
from schema.errors import ModelNotFound
from schema.jobs import Price, Route
from schema.prices import GenaiPrices

DOCUMENT = {
    "providers": {
        "acme": {"base_url": "http://acme/v1", "models": ["fake-small"]},
        "backup": {"base_url": "http://backup/v1", "models": ["fake-small"]},
        "router": {"base_url": "http://router/v1", "price_provider": "listed", "models": ["known"]},
    },
    "models": {
        "fake-small": {"providers": ["acme", "backup"], "upstream_ids": {"backup": "small-v2"},
                       "input_price_per_mtok": Decimal("0.15"), "output_price_per_mtok": Decimal("0.60")},
        "router/known": {"providers": ["router"], "input_price_per_mtok": 1, "output_price_per_mtok": 2},
    },
    "pricing": {"markup_percent": Decimal(10)},
}
# A price list with one provider, "listed", pricing one model.
PRICES = GenaiPrices(datetime(2026, 6, 1, tzinfo=UTC), providers=[Provider(
    id="listed", name="Listed", api_pattern="",
    models=[ModelInfo(id="list-priced", match=ClauseEquals(equals="list-priced"),
                      prices=ModelPrice(input_mtok=Decimal("0.5"), output_mtok=Decimal("1.5")))])])


def listing(*models: UpstreamModel) -> ProviderListing:
    return ProviderListing(models=models, listed_at=1.0, refreshed_at=1.0)


def catalog_with(document: dict = DOCUMENT, **listings: ProviderListing) -> Catalog:
    return Catalog(parse_config(document, {}, price_list=PRICES), listings, price_list=PRICES,
                   credits_per_usd=Decimal(1))


PUBLISHED = UpstreamModel(id="vendor/new-model", name="Vendor New Model", description="Answers about otters",
                          context_length=32_000, max_output_tokens=4_000, modalities=("text", "image"),
                          input_usd_per_mtok=Decimal("1"), output_usd_per_mtok=Decimal("2"))


def test_a_listed_model_with_a_published_price_is_served_pinned() -> None:
    catalog = catalog_with(router=listing(PUBLISHED, UpstreamModel(id="known")))
    route = catalog.route("router/vendor/new-model")
    assert route.routes == [Route(provider="router", upstream_model="vendor/new-model")]
    # The published US dollars, at 1 credit per dollar, plus the 10 % markup.
    assert route.price == Price(input_per_mtok=Decimal("1.1"), output_per_mtok=Decimal("2.2"))
    listed = catalog.find("router/vendor/new-model")
    assert listed.price.source == "published:router:vendor/new-model"
    assert (listed.name, listed.context_length, listed.max_output_tokens, listed.modalities) == (
        "Vendor New Model", 32_000, 4_000, ["text", "image"])
    assert catalog.route("vendor/new-model").routes == route.routes, "a bare listed id routes too"
    assert catalog.discovered["router"].served_ids == {"vendor/new-model"}
    assert ids(catalog.search(ModelQuery(text="otters"))) == ["router/vendor/new-model"]


def test_the_price_list_comes_before_a_published_price() -> None:
    both = UpstreamModel(id="list-priced", input_usd_per_mtok=Decimal(9), output_usd_per_mtok=Decimal(9))
    price = catalog_with(router=listing(both)).find("router/list-priced").price
    assert price.source == "genai-prices:listed:list-priced"
    assert price.price == Price(input_per_mtok=Decimal("0.55"), output_per_mtok=Decimal("1.65"))


def test_an_entry_of_the_same_id_prices_a_listed_model() -> None:
    catalog = catalog_with(router=listing(UpstreamModel(id="fake-small")))
    assert catalog.route("router/fake-small").price == catalog.route("fake-small").price
    assert catalog.route("router/fake-small").routes == [Route(provider="router", upstream_model="fake-small")]


def test_what_the_config_already_routes_adds_nothing() -> None:
    # backup knows fake-small as small-v2; router/known has an entry.
    catalog = catalog_with(backup=listing(UpstreamModel(id="small-v2")), router=listing(UpstreamModel(id="known")))
    assert catalog.discovered["backup"].served == () and catalog.discovered["router"].served == ()
    assert ids(catalog.models()) == ids(Catalog(parse_config(DOCUMENT, {}, price_list=PRICES)).models())


def test_an_unpriced_listed_model_is_reported_not_served() -> None:
    catalog = catalog_with(router=listing(UpstreamModel(id="mystery"), PUBLISHED))
    assert catalog.discovered["router"].unpriced == ("mystery",)
    assert catalog.find("router/mystery") is None
    with pytest.raises(ModelNotFound):
        catalog.route("router/mystery")

    free = catalog_with({**DOCUMENT, "pricing": {"unpriced": "free"}}, router=listing(UpstreamModel(id="mystery")))
    assert free.discovered["router"].unpriced == ("mystery",)
    assert free.route("router/mystery").price == Price()
    assert free.find("router/mystery").price.source == "unpriced"


def test_a_listed_kind_is_kept_for_routing() -> None:
    embedder = UpstreamModel(id="embedder", kind="embeddings", input_usd_per_mtok=Decimal("0.1"),
                             output_usd_per_mtok=Decimal(0))
    route = catalog_with(router=listing(embedder)).route("router/embedder")
    assert route.spec is not None and route.spec.kind == "embeddings"


def test_a_new_catalog_leaves_the_old_one_untouched() -> None:
    old = Catalog(parse_config(DOCUMENT, {}, price_list=PRICES))
    new = old.with_listings({"router": listing(PUBLISHED)}, price_list=PRICES, credits_per_usd=Decimal(1))
    assert new.find("router/vendor/new-model") is not None
    assert old.find("router/vendor/new-model") is None
    with pytest.raises(ModelNotFound):
        old.route("router/vendor/new-model")
    assert old.listings == {} and new.listings["router"].status == "ok"


def test_listings_of_providers_no_longer_configured_are_ignored() -> None:
    catalog = catalog_with(gone=listing(PUBLISHED))
    assert "gone" not in catalog.listings and catalog.find("gone/vendor/new-model") is None


def test_credits_per_usd_converts_published_prices() -> None:
    catalog = Catalog(parse_config(DOCUMENT, {}, price_list=PRICES), {"router": listing(PUBLISHED)}, price_list=None,
                      credits_per_usd=Decimal(100))
    assert catalog.route("router/vendor/new-model").price == Price(input_per_mtok=Decimal(110),
                                                                   output_per_mtok=Decimal(220))


def test_listing_status() -> None:
    assert ProviderListing().status == "unknown"
    good = listing(PUBLISHED)
    assert good.status == "ok"
    failed = good.failed("provider 'router' answered 503", at=2.0)
    assert (failed.status, failed.models, failed.listed_at, failed.refreshed_at) == ("error", good.models, 1.0, 2.0)
    assert ProviderListing.model_validate_json(failed.model_dump_json()) == failed


def ids(models: list) -> list[str]:
    return [model.id for model in models]


def test_a_list_never_overrides_an_entry_of_the_same_pinned_id() -> None:
    document = {**DOCUMENT, "models": {**DOCUMENT["models"], "router/odd": {
        "providers": ["acme"], "input_price_per_mtok": 7, "output_price_per_mtok": 7}}}
    catalog = catalog_with(document, router=listing(UpstreamModel(
        id="odd", input_usd_per_mtok=Decimal(1), output_usd_per_mtok=Decimal(1))))
    assert catalog.route("router/odd").routes == [Route(provider="acme", upstream_model="router/odd")]
    assert catalog.route("router/odd").price.input_per_mtok == 7


def test_a_listed_images_model_needs_the_config_per_image_price() -> None:
    painter = UpstreamModel(id="painter", kind="images", input_usd_per_mtok=Decimal(1), output_usd_per_mtok=Decimal(1))
    catalog = catalog_with(router=listing(painter))
    assert catalog.discovered["router"].unpriced == ("painter",)
    document = {**DOCUMENT, "models": {**DOCUMENT["models"], "painter": {
        "providers": ["acme"], "kind": "images", "price_per_image": Decimal("0.04")}}}
    assert catalog_with(document, router=listing(painter)).route("router/painter").price.per_image == Decimal("0.04")


def test_a_listed_kind_the_adapter_cannot_serve_is_left_out() -> None:
    document = {**DOCUMENT, "providers": {**DOCUMENT["providers"], "claude": {
        "adapter": "anthropic", "base_url": "http://claude/v1", "price_provider": "listed"}}}
    embedder = UpstreamModel(id="list-priced", kind="embeddings")
    catalog = catalog_with(document, claude=listing(embedder))
    assert catalog.discovered["claude"].served == () and catalog.discovered["claude"].unpriced == ()
