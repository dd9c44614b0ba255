"""The model catalog API in both modes, as a client sees it: ``/v1/models``
through the official SDK, ``/v1/models/search``, ``/v1/provider``, and who
may ask for a refresh. (Refreshing itself: test_catalog_refresh.py.)"""

from __future__ import annotations

from decimal import Decimal

import httpx
import openai
import pytest

from tests.conftest import ANTHROPIC_KEY, UPSTREAM_KEY
from tests.support.gateway import ADMIN_TOKEN, Gateway

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(api_key=gateway.create_key("1"), base_url=gateway.base_url, max_retries=0, timeout=30)


def search(gateway: Gateway, **params: str) -> httpx.Response:
    return httpx.get(f"{gateway.base_url}/models/search", params=params)


def found(gateway: Gateway, **params: str) -> list[str]:
    response = search(gateway, **params)
    assert response.status_code == 200, response.text
    return [model["id"] for model in response.json()["data"]]


def test_models_keep_openai_shape_with_the_gateway_fields(gateway: Gateway) -> None:
    models = {model.id: model for model in client(gateway).models.list()}
    small = models["fake-small"]
    assert (small.object, small.created, small.owned_by) == ("model", 0, "fake")
    extra = small.model_extra
    assert extra["pricing"] == {"input_per_mtok": "1.00", "output_per_mtok": "2.00", "unit": "credits"}
    assert (extra["context_length"], extra["max_output_tokens"], extra["kind"], extra["modalities"]) == (
        8192, None, "chat", ["text"])
    assert extra["providers"] == ["fake", "fake2"], "candidates in routing order"
    # A pinned id routes to its provider alone, whatever the entry's candidates.
    assert models["fake2/fake-small"].model_extra["providers"] == ["fake2"]
    assert models["mock/echo"].model_extra["max_output_tokens"] == 4096
    # An images model's price per image, beside its token prices.
    image = models["fake-image"].model_extra
    assert (image["kind"], image["pricing"]["per_image"], image["pricing"]["input_per_mtok"]) == ("images", "0.04", "0")
    assert models["fake-embed"].model_extra["kind"] == "embeddings"


def test_one_model_whose_id_has_a_slash(gateway: Gateway) -> None:
    sdk = client(gateway)
    model = sdk.models.retrieve("fake/fake-large")
    assert (model.id, model.owned_by) == ("fake/fake-large", "fake")
    assert model.model_extra["pricing"]["output_per_mtok"] == "2.00"
    assert sdk.models.retrieve("gpt-4o-mini").model_extra["price_source"] == "genai-prices:openai:gpt-4o-mini"
    with pytest.raises(openai.NotFoundError) as raised:
        sdk.models.retrieve("fake/ghost")
    assert raised.value.body["code"] == "model_not_found"


def test_search_is_not_read_as_a_model_id(gateway: Gateway) -> None:
    assert found(gateway) == [model.id for model in client(gateway).models.list()]
    # The id itself, then ids ending with it, then ids containing it.
    assert found(gateway, q="fake-small") == ["fake-small", "fake/fake-small", "fake2/fake-small",
                                              "locked/fake-small", "claude-fake-small", "claude/claude-fake-small"]


def test_search_criteria(gateway: Gateway) -> None:
    assert found(gateway, q="large") == ["fake/fake-large"]
    assert found(gateway, provider="fake2") == ["fake-small", "fake2/fake-small"]
    assert found(gateway, min_context_length="8000") == ["fake-small", "fake/fake-small", "fake2/fake-small",
                                                         "mock/echo"]
    # Token prices: gpt-4o-mini is OpenAI's 0.15 / 0.60 plus 20 %; fake-output-priced 0 / 2; image
    # models priced per image only, and mock/embed (input 0.10), cost nothing more per token.
    assert found(gateway, max_input_price="0.18") == ["fake-image", "fake-output-priced", "gpt-4o-mini",
                                                      "mock/embed", "mock/image"]
    assert found(gateway, max_input_price="0.18", max_output_price="0.72") == ["fake-image", "gpt-4o-mini",
                                                                              "mock/embed", "mock/image"]
    assert found(gateway, modality="text", q="mini") == ["gpt-4o-mini"]
    assert found(gateway, modality="embeddings") == ["fake-embed", "mock/embed"]
    assert found(gateway, modality="images", provider="fake") == ["fake-gpt-image", "fake-image"]
    response = search(gateway, q="echo")
    model = response.json()["data"][0]
    assert (model["id"], model["object"], model["pricing"]["input_per_mtok"]) == ("mock/echo", "model", "1.00")


@pytest.mark.parametrize(("params", "param"), [
    ({"max_input_price": "cheap"}, "max_input_price"),
    ({"max_output_price": "-1"}, "max_output_price"),
    ({"max_input_price": "NaN"}, "max_input_price"),
    ({"min_context_length": "long"}, "min_context_length"),
    ({"min_context_length": "0"}, "min_context_length"),
    ({"modality": "smell"}, "modality"),
    ({"provider": "ghost"}, "provider"),
    ({"q": "x" * 201}, "q"),
    ({"max_price": "1"}, "max_price"),
])
def test_bad_search_parameters_are_400_in_openai_format(gateway: Gateway, params: dict[str, str], param: str) -> None:
    response = search(gateway, **params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert error["message"]


def test_providers_with_their_models_and_status(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    for path in ("/provider", "/providers"):
        response = httpx.get(f"{gateway.base_url}{path}", headers={"authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text
        providers = {provider["name"]: provider for provider in response.json()["data"]}
        assert set(providers) == {"fake", "fake2", "locked", "claude", "mock"}
        fake = providers["fake"]
        assert (fake["object"], fake["adapter"], fake["base_url"], fake["auth"]) == (
            "provider", "openai", f"{gateway.config.providers['fake'].base_url}", "bearer")
        assert fake["enabled"] is True and fake["key_configured"] is True
        assert {"fake-small", "fake/fake-large", "fake/fake-small", "gpt-4o-mini"} <= set(fake["models"])
        assert "fake2/fake-small" not in fake["models"]
        assert fake["model_count"] == len(fake["models"])
        assert fake["status"] in ("unknown", "ok", "error")
        mock = providers["mock"]
        assert (mock["adapter"], mock["base_url"], mock["key_configured"], mock["models"]) == (
            "mock", None, False, ["mock/echo", "mock/embed", "mock/image"])
        claude = providers["claude"]
        assert (claude["adapter"], claude["auth"], claude["models"]) == (
            "anthropic", "x-api-key", ["claude-fake-small", "claude/claude-fake-small", "fake-anywhere"])
        assert (fake["verified"], fake["notes"], fake["disabled_reason"]) == (True, None, None)
        for secret in (UPSTREAM_KEY, ANTHROPIC_KEY, "sk-wrong-key"):
            assert secret not in response.text


def test_providers_take_an_api_key(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.base_url}/provider").status_code == 401
    response = httpx.get(f"{gateway.base_url}/provider", headers={"authorization": "Bearer gz-not-a-key"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401), ({"authorization": "Bearer not-the-admin-token"}, 403),
])
def test_refreshing_takes_the_admin_token(gateway: Gateway, headers: dict[str, str], status: int) -> None:
    response = httpx.post(f"{gateway.url}/admin/refresh-providers", headers=headers)
    assert response.status_code == status
    assert "error" in response.json()


def test_refreshing_one_provider_from_the_upstream_list(gateway: Gateway) -> None:
    """The session upstream lists fake-small and fake-large; fake2 serves
    fake-small already, and fake-large would have no price there."""
    response = httpx.post(f"{gateway.url}/admin/refresh-providers", params={"provider": "fake2"}, headers=ADMIN)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["object"] == "provider_refresh" and report["persisted"] is True
    [fake2] = report["data"]
    assert (fake2["provider"], fake2["status"], fake2["error"], fake2["listed"]) == ("fake2", "ok", None, 2)
    assert (fake2["added"], fake2["removed"], fake2["unpriced"]) == ([], [], ["fake2/fake-large"])
    assert fake2["count"] == 2  # fake-small and fake2/fake-small
    with pytest.raises(openai.NotFoundError):
        client(gateway).models.retrieve("fake2/fake-large")

    key = gateway.create_key("1")
    providers = httpx.get(f"{gateway.base_url}/provider", headers={"authorization": f"Bearer {key}"}).json()["data"]
    listed = next(provider for provider in providers if provider["name"] == "fake2")
    assert listed["status"] == "ok"
    assert (listed["last_refresh"]["status"], listed["last_refresh"]["listed"]) == ("ok", 2)


@pytest.mark.parametrize(("provider", "status", "code"), [("ghost", 404, "provider_not_found"), ("mock", 400, None)])
def test_refreshing_an_unknown_or_built_in_provider(gateway: Gateway, provider: str, status: int,
                                                   code: str | None) -> None:
    response = httpx.post(f"{gateway.url}/admin/refresh-providers", params={"provider": provider}, headers=ADMIN)
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, "provider")


def test_decimal_prices_round_trip(gateway: Gateway) -> None:
    for model in client(gateway).models.list():
        pricing = model.model_extra.get("pricing")
        if pricing is not None:
            assert Decimal(pricing["input_per_mtok"]) >= 0 and "E" not in pricing["output_per_mtok"]
