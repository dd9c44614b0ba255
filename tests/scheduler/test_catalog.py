"""Routing is pure: model id in, ordered candidates and a price snapshot out.
(How prices are resolved at load: tests/schema/test_price_resolution.py.)"""

from __future__ import annotations

from decimal import Decimal

import pytest

from scheduler.catalog import Catalog, ModelQuery
from schema.catalog import ConfigError, parse_config
from schema.errors import InvalidRequest, ModelNotFound
from schema.jobs import Price, Route

DOCUMENT = {
    "providers": {
        "acme": {"base_url": "http://acme/v1/", "api_key_env": "ACME_KEY", "models": ["fake-small", "fake-large"]},
        "backup": {"base_url": "http://backup/v1", "models": ["fake-small"]},
        "meta": {"base_url": "http://meta/v1", "models": ["llama/3-8b"]},
    },
    "models": {
        "fake-small": {"providers": ["acme", "backup"], "upstream_ids": {"backup": "small-v2"},
                       "input_price_per_mtok": Decimal("0.15"), "output_price_per_mtok": Decimal("0.60")},
    },
    "pricing": {"unpriced": "free"},
}


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(parse_config(DOCUMENT, {"ACME_KEY": "sk-acme"}))


def test_bare_model_uses_candidates_in_order(catalog: Catalog) -> None:
    route = catalog.route("fake-small")
    assert route.routes == [Route(provider="acme", upstream_model="fake-small"),
                            Route(provider="backup", upstream_model="small-v2")]
    assert route.price == Price(input_per_mtok=Decimal("0.15"), output_per_mtok=Decimal("0.60"))


def test_prefix_pins_the_provider_and_keeps_the_price(catalog: Catalog) -> None:
    route = catalog.route("backup/fake-small")
    assert route.routes == [Route(provider="backup", upstream_model="small-v2")]
    assert route.price.output_per_mtok == Decimal("0.60")


def test_unpriced_model_is_free_and_pinned_when_the_config_says_so(catalog: Catalog) -> None:
    route = catalog.route("acme/fake-large")
    assert route.routes == [Route(provider="acme", upstream_model="fake-large")]
    assert route.price == Price()
    assert catalog.find("acme/fake-large").price.source == "unpriced"


def test_a_provider_listing_no_models_routes_only_priced_ids() -> None:
    document = {"providers": {"any": {"base_url": "http://any/v1"}},
                "models": {"m": {"providers": ["any"], "input_price_per_mtok": 1, "output_price_per_mtok": 2}}}
    catalog = Catalog(parse_config(document, {}))
    assert catalog.route("any/m").price == Price(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2))
    with pytest.raises(ModelNotFound, match="has no price"):
        catalog.route("any/other")
    free = Catalog(parse_config({**document, "pricing": {"unpriced": "free"}}, {}))
    assert free.route("any/other").price == Price()


def test_model_ids_with_slashes(catalog: Catalog) -> None:
    assert catalog.route("meta/llama/3-8b").routes == [Route(provider="meta", upstream_model="llama/3-8b")]
    assert catalog.route("llama/3-8b").routes == [Route(provider="meta", upstream_model="llama/3-8b")]


def test_mock_is_always_there(catalog: Catalog) -> None:
    route = catalog.route("mock/echo")
    assert route.routes == [Route(provider="mock", upstream_model="echo")]
    assert route.price.input_per_mtok == Decimal("1.00")


@pytest.mark.parametrize("model", ["nope", "acme/not-served", "ghost/fake-small"])
def test_unknown_models(catalog: Catalog, model: str) -> None:
    with pytest.raises(ModelNotFound):
        catalog.route(model)


@pytest.mark.parametrize("model", [None, "", 42, ["fake-small"]])
def test_model_must_be_a_string(catalog: Catalog, model: object) -> None:
    with pytest.raises(InvalidRequest):
        catalog.route(model)


def test_listing(catalog: Catalog) -> None:
    ids = [model.id for model in catalog.models()]
    assert ids == sorted(ids)
    assert {"fake-small", "acme/fake-large", "backup/fake-small", "meta/llama/3-8b", "mock/echo"} <= set(ids)


def test_provider_key_comes_from_the_environment_and_stays_secret(catalog: Catalog) -> None:
    acme = catalog.provider("acme")
    assert acme.api_key.get_secret_value() == "sk-acme"
    assert "sk-acme" not in repr(acme) and "sk-acme" not in acme.model_dump_json()
    assert acme.base_url == "http://acme/v1"
    assert catalog.provider("backup").api_key is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"providers": {"x": {"adapter": "openai"}}}, "base_url is required"),
        ({"providers": {"x": {"adapter": "smoke-signals", "base_url": "http://x"}}}, "adapter"),
        ({"providers": {}, "models": {"m": {"providers": ["ghost"]}}}, "unknown providers"),
        ({"providers": {}, "models": {"m": {"providers": ["mock"], "input_price_per_mtok": Decimal(-1)}}},
         "not negative"),
        ({"providers": {"x": {"base_url": "http://x", "typo_field": 1}}}, "typo_field"),
        ({"providers": ["x"]}, r"\[providers\] is a table, not list"),
        ({"pricing": "free"}, r"\[pricing\] is a table, not str"),
    ],
)
def test_config_errors_say_what_is_wrong(document: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(document, {})


@pytest.mark.parametrize("name", ["dead letters", "Upper", "-leading", "a.b", "x" * 64])
def test_provider_names_are_safe_in_queue_names(name: str) -> None:
    with pytest.raises(ConfigError, match="name"):
        parse_config({"providers": {name: {"base_url": "http://x"}}}, {})


# Search: pure, over what the catalog lists

SEARCH_DOCUMENT = {
    "providers": {
        "acme": {"base_url": "http://acme/v1", "models": ["fake-small", "odd-one"]},
        "backup": {"base_url": "http://backup/v1", "models": ["fake-small"]},
    },
    "models": {
        "fake-small": {"providers": ["acme", "backup"], "input_price_per_mtok": Decimal("0.15"),
                       "output_price_per_mtok": Decimal("0.60"), "context_length": 8192},
        "vision-pro": {"providers": ["acme"], "modalities": ["text", "image"], "input_price_per_mtok": Decimal(3),
                       "output_price_per_mtok": Decimal(15), "context_length": 200_000},
        "embed-3": {"providers": ["backup"], "kind": "embeddings", "input_price_per_mtok": Decimal("0.02"),
                    "output_price_per_mtok": Decimal(0), "context_length": 8191},
        "painter": {"providers": ["acme"], "kind": "images", "input_price_per_mtok": Decimal(5),
                    "output_price_per_mtok": Decimal(40)},
    },
    "pricing": {"unpriced": "free"},
}


@pytest.fixture
def searchable() -> Catalog:
    return Catalog(parse_config(SEARCH_DOCUMENT, {}))


def ids(models: list) -> list[str]:
    return [model.id for model in models]


def test_search_without_criteria_lists_everything_by_id(searchable: Catalog) -> None:
    assert ids(searchable.search(ModelQuery())) == ids(searchable.models())


def test_search_text_ranks_the_id_itself_first(searchable: Catalog) -> None:
    assert ids(searchable.search(ModelQuery(text="fake-small"))) == [
        "fake-small", "acme/fake-small", "backup/fake-small"]
    assert ids(searchable.search(ModelQuery(text="VISION"))) == ["vision-pro"]
    # Every word must match somewhere.
    assert ids(searchable.search(ModelQuery(text="fake acme"))) == ["acme/fake-small"]
    assert searchable.search(ModelQuery(text="nothing-like-it")) == []


def test_search_by_provider_modality_and_kind(searchable: Catalog) -> None:
    assert ids(searchable.search(ModelQuery(provider="backup"))) == ["backup/fake-small", "embed-3", "fake-small"]
    assert ids(searchable.search(ModelQuery(modality="image"))) == ["vision-pro"]
    assert ids(searchable.search(ModelQuery(modality="embeddings"))) == ["embed-3", "mock/embed"]
    assert ids(searchable.search(ModelQuery(modality="images"))) == ["mock/image", "painter"]
    assert "embed-3" not in ids(searchable.search(ModelQuery(modality="chat")))


def test_search_by_price_and_context(searchable: Catalog) -> None:
    cheap = ids(searchable.search(ModelQuery(max_input_price=Decimal("0.15"))))
    # acme/odd-one: unpriced, served free, so it costs 0; mock/image is priced per image only.
    assert cheap == ["acme/fake-small", "acme/odd-one", "backup/fake-small", "embed-3", "fake-small", "mock/embed",
                     "mock/image"]
    assert ids(searchable.search(ModelQuery(max_output_price=Decimal(0)))) == [
        "acme/odd-one", "embed-3", "mock/embed", "mock/image"]
    assert ids(searchable.search(ModelQuery(max_input_price=Decimal(5), max_output_price=Decimal(15)))) == [
        "acme/fake-small", "acme/odd-one", "backup/fake-small", "embed-3", "fake-small", "mock/echo", "mock/embed",
        "mock/image", "vision-pro"]
    assert ids(searchable.search(ModelQuery(min_context_length=100_000))) == ["vision-pro"]
    # A model whose context length is unknown never meets a minimum.
    assert "acme/odd-one" not in ids(searchable.search(ModelQuery(min_context_length=1)))
    assert ids(searchable.search(ModelQuery(text="small", provider="acme", max_output_price=Decimal(1),
                                            min_context_length=8192))) == ["acme/fake-small", "fake-small"]


@pytest.mark.parametrize(("query", "param"), [
    (ModelQuery(provider="ghost"), "provider"),
    (ModelQuery(modality="smell"), "modality"),
    (ModelQuery(max_input_price=Decimal(-1)), "max_input_price"),
    (ModelQuery(max_output_price=Decimal("NaN")), "max_output_price"),
    (ModelQuery(max_output_price=Decimal("Infinity")), "max_output_price"),
    (ModelQuery(min_context_length=0), "min_context_length"),
    (ModelQuery(text="x" * 201), "q"),
])
def test_search_refuses_criteria_no_catalog_can_meet(searchable: Catalog, query: ModelQuery, param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        searchable.search(query)
    assert raised.value.param == param
