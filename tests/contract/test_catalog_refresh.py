"""Refreshing the catalog from providers' own model lists, in both modes,
against fake providers on loopback that speak each list's wire format:
what is added, priced, reported unpriced, kept when a provider fails, used
through the SDK, saved for a restart and for other ingress processes; and
keys that only ever reach their own provider and never any output."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from ingress.app import create_app
from schema.catalog import GatewayConfig, parse_config
from tests.conftest import MODES
from tests.support.fake_anthropic import MODELS as ANTHROPIC_MODELS
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_model_lists import FakeModelLists, ListedProvider
from tests.support.gateway import ADMIN_TOKEN, Gateway, gateway_in_mode, running_gateway
from tests.support.servers import ServerThread, serving

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
KEYS = {
    "ROUTER_KEY": "sk-router-secret-1111111111",
    "LISTED_KEY": "sk-listed-secret-2222222222",
    "FLAKY_KEY": "sk-flaky-secret-3333333333",
    "GEMINI_KEY": "gm-gemini-secret-4444444444",
    "CLAUDE_KEY": "sk-ant-claude-secret-5555555555",
}
# OpenRouter-style: US dollars per token, as strings.
NEW_MODEL = {"id": "vendor/new-model", "name": "Vendor: New Model", "description": "Writes sonnets about otters",
             "created": 1_750_000_000, "context_length": 65_536,
             "architecture": {"input_modalities": ["text", "image"], "output_modalities": ["text"]},
             "top_provider": {"context_length": 65_536, "max_completion_tokens": 8_192},
             "pricing": {"prompt": "0.000001", "completion": "0.000002", "request": "0"}}
ROUTER_MODELS = [
    {"id": "known", "object": "model"},
    NEW_MODEL,
    {"id": "vendor/mystery", "name": "No price published"},
    {"id": "vendor/free", "pricing": {"prompt": "0", "completion": "0"}},
    {"id": "router/auto", "pricing": {"prompt": "-1", "completion": "-1"}},  # variable: no price
    {"id": "bad id with spaces"},
]
GEMINI_MODELS = [
    {"name": "models/gemini-known", "supportedGenerationMethods": ["generateContent"]},
    {"name": "models/gemini-2.0-flash", "displayName": "Gemini 2.0 Flash", "inputTokenLimit": 1_048_576,
     "outputTokenLimit": 8_192, "supportedGenerationMethods": ["generateContent", "countTokens"]},
    {"name": "models/aqa", "supportedGenerationMethods": ["generateAnswer"]},
]


@pytest.fixture(scope="module")
def lists() -> Iterator[FakeModelLists]:
    with serving(FakeModelLists(), "fake model lists") as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic() -> Iterator[FakeAnthropic]:
    with serving(FakeAnthropic(api_key=KEYS["CLAUDE_KEY"]), "fake anthropic") as fake:
        yield fake


def refresh_config(lists: FakeModelLists, anthropic: FakeAnthropic) -> GatewayConfig:
    document = {
        "providers": {
            "router": {"base_url": lists.base_url("router"), "api_key_env": "ROUTER_KEY", "models": ["known"]},
            # Named for a price-list provider: what it lists is priced from genai-prices' OpenAI table.
            "listed": {"base_url": lists.base_url("listed"), "api_key_env": "LISTED_KEY", "price_provider": "openai",
                       "models": ["gpt-4o-mini"]},
            "flaky": {"base_url": lists.base_url("flaky"), "api_key_env": "FLAKY_KEY", "models": ["steady"],
                      "timeout": 1},
            "gem": {"adapter": "gemini", "base_url": lists.base_url("gem", gemini=True), "api_key_env": "GEMINI_KEY",
                    "price_provider": "google", "models": ["gemini-known"]},
            "claude": {"adapter": "anthropic", "base_url": f"{anthropic.url}/v1", "api_key_env": "CLAUDE_KEY",
                       "models": ["claude-fake-small"]},
            "off": {"base_url": lists.base_url("off"), "api_key_env": "ROUTER_KEY", "enabled": False,
                    "models": ["anything"]},
        },
        "models": {
            "router/known": {"providers": ["router"], "input_price_per_mtok": 1, "output_price_per_mtok": 2},
            "flaky/steady": {"providers": ["flaky"], "input_price_per_mtok": 1, "output_price_per_mtok": 2},
            "gem/gemini-known": {"providers": ["gem"], "input_price_per_mtok": 1, "output_price_per_mtok": 2},
            "claude/claude-fake-small": {"providers": ["claude"], "input_price_per_mtok": 1,
                                         "output_price_per_mtok": 2},
        },
    }
    return parse_config(document, KEYS)


def serve_lists(lists: FakeModelLists) -> None:
    lists.add("router", ListedProvider(KEYS["ROUTER_KEY"], models=ROUTER_MODELS))
    lists.add("listed", ListedProvider(KEYS["LISTED_KEY"], models=[
        {"id": "gpt-4o-mini"}, {"id": "gpt-4o"}, {"id": "text-embedding-3-small"}]))
    lists.add("flaky", ListedProvider(KEYS["FLAKY_KEY"], models=[
        {"id": "steady"}, {"id": "extra", "pricing": {"prompt": "0.000003", "completion": "0.000004"}}]))
    lists.add("gem", ListedProvider(KEYS["GEMINI_KEY"], auth="x-goog-api-key", models=GEMINI_MODELS))


@pytest.fixture(scope="module", params=MODES)
def gateway(request: pytest.FixtureRequest, lists: FakeModelLists, anthropic: FakeAnthropic,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp(f"refresh-{request.param}")
    with refreshing_gateway(request.param, lists, anthropic, data_dir) as gateway:
        yield gateway


@pytest.fixture(params=MODES)
def unrefreshed_gateway(request: pytest.FixtureRequest, lists: FakeModelLists, anthropic: FakeAnthropic,
                        tmp_path: Path) -> Iterator[Gateway]:
    """A gateway of the test's own, that no other test has refreshed."""
    with refreshing_gateway(request.param, lists, anthropic, tmp_path) as gateway:
        yield gateway


@contextmanager
def refreshing_gateway(mode: str, lists: FakeModelLists, anthropic: FakeAnthropic, data_dir: Path) -> Iterator[Gateway]:
    serve_lists(lists)
    with gateway_in_mode(mode, refresh_config(lists, anthropic), data_dir, admin_token=ADMIN_TOKEN) as gateway:
        yield gateway


def refresh(gateway: Gateway, **params: str) -> dict[str, Any]:
    response = httpx.post(f"{gateway.url}/admin/refresh-providers", params=params, headers=ADMIN, timeout=30)
    assert response.status_code == 200, response.text
    for secret in KEYS.values():
        assert secret not in response.text
    return response.json()


def by_provider(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {part["provider"]: part for part in report["data"]}


def model_ids(gateway: Gateway) -> set[str]:
    return {model["id"] for model in httpx.get(f"{gateway.base_url}/models").json()["data"]}


def providers(gateway: Gateway, key: str) -> dict[str, dict[str, Any]]:
    response = httpx.get(f"{gateway.base_url}/provider", headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    for secret in KEYS.values():
        assert secret not in response.text
    return {provider["name"]: provider for provider in response.json()["data"]}


def test_a_refresh_adds_priced_models_and_reports_the_rest(unrefreshed_gateway: Gateway) -> None:
    gateway = unrefreshed_gateway
    key = gateway.create_key("1")
    before = providers(gateway, key)["router"]
    assert (before["status"], before["last_refresh"]) == ("unknown", None)
    report = by_provider(refresh(gateway))
    assert set(report) == {"router", "listed", "flaky", "gem", "claude", "mock"}
    assert report["mock"]["status"] == "skipped"

    router = report["router"]
    assert (router["status"], router["error"], router["listed"]) == ("ok", None, 5)  # the id with spaces is left out
    assert router["unpriced"] == ["router/router/auto", "router/vendor/mystery"]
    assert (router["added"], router["removed"]) == (["router/vendor/free", "router/vendor/new-model"], [])
    assert router["count"] == 3  # router/known and the two priced ones

    listed = report["listed"]
    assert listed["status"] == "ok" and listed["unpriced"] == []
    assert listed["count"] == 3

    gem = report["gem"]  # two pages; aqa generates no content
    assert (gem["status"], gem["listed"], gem["unpriced"]) == ("ok", 2, [])
    claude = report["claude"]  # Anthropic's list: the other fake model has no price
    assert (claude["status"], claude["listed"], claude["unpriced"]) == ("ok", len(ANTHROPIC_MODELS),
                                                                        ["claude/claude-fake-large"])

    ids = model_ids(gateway)
    assert {"router/vendor/new-model", "router/vendor/free", "listed/gpt-4o", "listed/text-embedding-3-small",
            "gem/gemini-2.0-flash", "flaky/extra"} <= ids
    assert not {"router/vendor/mystery", "router/router/auto", "claude/claude-fake-large", "gem/aqa"} & ids

    shown = providers(gateway, key)
    assert (shown["router"]["status"], shown["router"]["last_refresh"]["listed"]) == ("ok", 5)
    assert "router/vendor/new-model" in shown["router"]["models"]
    off = shown["off"]
    assert (off["enabled"], off["status"], off["models"], off["last_refresh"]) == (False, "disabled", [], None)
    assert "enabled = false" in off["disabled_reason"]
    response = httpx.post(f"{gateway.url}/admin/refresh-providers", params={"provider": "off"}, headers=ADMIN)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "provider_not_found")


def test_listed_models_carry_their_price_and_what_the_provider_said(gateway: Gateway) -> None:
    refresh(gateway, provider="router")
    sdk = openai.OpenAI(api_key=gateway.create_key("1"), base_url=gateway.base_url, max_retries=0)
    model = sdk.models.retrieve("router/vendor/new-model")
    extra = model.model_extra
    assert (model.owned_by, model.created) == ("router", 1_750_000_000)
    assert extra["pricing"] == {"input_per_mtok": "1", "output_per_mtok": "2", "unit": "credits"}
    assert extra["price_source"] == "published:router:vendor/new-model"
    assert (extra["name"], extra["context_length"], extra["max_output_tokens"], extra["modalities"]) == (
        "Vendor: New Model", 65_536, 8_192, ["text", "image"])
    assert sdk.models.retrieve("router/vendor/free").model_extra["pricing"]["input_per_mtok"] == "0"

    refresh(gateway, provider="listed")
    gpt = sdk.models.retrieve("listed/gpt-4o").model_extra
    assert gpt["price_source"] == "genai-prices:openai:gpt-4o"
    assert Decimal(gpt["pricing"]["input_per_mtok"]) > 0
    assert sdk.models.retrieve("listed/text-embedding-3-small").model_extra["kind"] == "embeddings"

    found = httpx.get(f"{gateway.base_url}/models/search", params={"q": "otters"}).json()["data"]
    assert [model["id"] for model in found] == ["router/vendor/new-model"]
    refresh(gateway, provider="gem")
    found = httpx.get(f"{gateway.base_url}/models/search", params={"provider": "gem", "min_context_length": "1000000"})
    assert [model["id"] for model in found.json()["data"]] == ["gem/gemini-2.0-flash"]


def test_a_listed_model_is_used_and_charged_at_its_published_price(gateway: Gateway, lists: FakeModelLists) -> None:
    refresh(gateway, provider="router")
    key = gateway.create_key("1")
    sdk = openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=30)
    response = sdk.chat.completions.with_raw_response.create(
        model="router/vendor/new-model", messages=[{"role": "user", "content": "hello there"}])
    completion = response.parse()
    assert completion.choices[0].message.content == "Echo: hello there"
    assert response.headers["x-gatewayz-provider"] == "router"
    assert lists.chat_requests[-1]["body"]["model"] == "vendor/new-model"
    # 2 prompt tokens at 1 credit and 3 completion tokens at 2 credits per million.
    assert completion.usage.model_extra["cost"] == "0.000008"
    assert gateway.wait_for_balance(key, 1_000_000 - 8) == 1_000_000 - 8


def test_a_failing_provider_keeps_its_last_good_list(gateway: Gateway, lists: FakeModelLists,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    flaky = lists.providers["flaky"]
    flaky.command = None
    assert by_provider(refresh(gateway, provider="flaky"))["flaky"]["status"] == "ok"
    assert "flaky/extra" in model_ids(gateway)
    key = gateway.create_key("1")
    try:
        for command, error in [
            ("fail:503", "answered 503"),
            ("fail:400", "[redacted]"),  # the provider quoted the key: never shown
            ("fail:401", "refused the gateway's credentials"),
            ("hang", "did not list its models within 1 s"),
            ("notobject", "listed no models"),
            ("garbage", "not JSON"),
            ("empty", "listed no models"),
        ]:
            flaky.command = command
            started = time.monotonic()
            part = by_provider(refresh(gateway, provider="flaky"))["flaky"]
            assert time.monotonic() - started < 5
            assert (part["status"], part["added"], part["removed"]) == ("error", [], []), command
            assert error in part["error"], (command, part["error"])
            assert part["count"] == 2 and part["listed_at"] is not None
            assert "flaky/extra" in model_ids(gateway), f"the last good list is kept after {command}"
            shown = providers(gateway, key)["flaky"]
            assert (shown["status"], shown["last_refresh"]["status"], shown["last_refresh"]["listed"]) == (
                "error", "error", 2)
        # Other providers are refreshed whatever one of them does.
        flaky.command = "hang"
        report = by_provider(refresh(gateway))
        assert report["flaky"]["status"] == "error" and report["router"]["status"] == "ok"
    finally:
        flaky.command = None
    flaky.models = [{"id": "steady"}]
    try:
        part = by_provider(refresh(gateway, provider="flaky"))["flaky"]
        assert (part["status"], part["removed"], part["count"]) == ("ok", ["flaky/extra"], 1)
        assert "flaky/extra" not in model_ids(gateway)
    finally:
        flaky.models = [{"id": "steady"}, {"id": "extra", "pricing": {"prompt": "0.000003", "completion": "0.000004"}}]
    assert by_provider(refresh(gateway, provider="flaky"))["flaky"]["added"] == ["flaky/extra"]
    assert "provider flaky: model list refresh failed" in caplog.text
    assert not [secret for secret in KEYS.values() if secret in caplog.text], "keys never reach the logs"


def test_each_key_goes_to_its_own_provider_only(gateway: Gateway, lists: FakeModelLists,
                                                anthropic: FakeAnthropic) -> None:
    refresh(gateway)
    own = {"router": "ROUTER_KEY", "listed": "LISTED_KEY", "flaky": "FLAKY_KEY", "gem": "GEMINI_KEY"}
    for name, variable in own.items():
        seen = lists.providers[name].seen
        assert seen, name
        for headers in seen:
            sent = " ".join(headers.values())
            assert KEYS[variable] in sent
            assert not [other for other, secret in KEYS.items() if other != variable and secret in sent], name
    assert lists.providers["gem"].seen[-1]["x-goog-api-key"] == KEYS["GEMINI_KEY"]
    assert "authorization" not in lists.providers["gem"].seen[-1]
    models = [request for request in anthropic.requests if request["url"].split("?")[0].endswith("/v1/models")]
    assert models
    assert models[-1]["headers"]["x-api-key"] == KEYS["CLAUDE_KEY"]
    assert models[-1]["headers"]["anthropic-version"]
    assert "limit=1000" in models[-1]["url"]


def test_a_restarted_gateway_serves_the_saved_lists(gateway: Gateway, lists: FakeModelLists) -> None:
    """Embedded: the data directory's file; distributed: Redis, which a
    second ingress process loads at start and follows afterwards."""
    refresh(gateway, provider="router")
    router = lists.providers["router"]
    router.command = "fail:503"  # whatever the provider says now, the saved list serves
    try:
        with another_ingress(gateway) as second:
            assert {"router/vendor/new-model", "router/vendor/free"} <= model_ids(second)
            if gateway.settings.redis_url:
                router.command = None
                router.models = [*ROUTER_MODELS, {"id": "vendor/later", "pricing": {"prompt": "0", "completion": "0"}}]
                assert by_provider(refresh(gateway, provider="router"))["router"]["added"] == ["router/vendor/later"]
                assert wait_for(lambda: "router/vendor/later" in model_ids(second), timeout=10)
    finally:
        router.command = None
        router.models = ROUTER_MODELS
    if gateway.settings.redis_url:
        assert by_provider(refresh(gateway, provider="router"))["router"]["removed"] == ["router/vendor/later"]


class another_ingress:
    """A second gateway process's worth of HTTP API on the same services
    (distributed) or the same data directory (embedded, run after the first
    has saved)."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._server: ServerThread | None = None

    def __enter__(self) -> Gateway:
        app = create_app(self._gateway.settings, self._gateway.config)
        self._server = ServerThread(app, name="second ingress", settings=self._gateway.settings).__enter__()
        return Gateway(self._gateway.settings, self._gateway.config, self._server)

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.__exit__(*exc_info)


def wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_an_embedded_restart_keeps_the_lists(tmp_path: Path, lists: FakeModelLists, anthropic: FakeAnthropic) -> None:
    serve_lists(lists)
    config = refresh_config(lists, anthropic)
    with running_gateway(config, tmp_path, admin_token=ADMIN_TOKEN) as first:
        assert by_provider(refresh(first, provider="flaky"))["flaky"]["status"] == "ok"
    lists.providers["flaky"].command = "hang"
    try:
        with running_gateway(config, tmp_path, admin_token=ADMIN_TOKEN) as second:
            assert "flaky/extra" in model_ids(second)
            key = second.create_key("1")
            assert providers(second, key)["flaky"]["status"] == "ok"
    finally:
        lists.providers["flaky"].command = None
    assert (tmp_path / "provider-listings.json").exists()
    assert not [secret for secret in KEYS.values() if secret in (tmp_path / "provider-listings.json").read_text()]
