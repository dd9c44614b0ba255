"""The provider catalog shipped with the gateway (schema/providers.toml) and
how a config is built from it: which providers a key variable, the secrets
file or the operator's config enable, which models stay routable and at
what price, and that provider keys stay secret."""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from scheduler.catalog import Catalog
from schema.catalog import MOCK_MODELS, ConfigError, GatewayConfig, ModelSpec, ProviderSpec, load_config, parse_config
from schema.errors import ModelNotFound
from schema.jobs import Route
from schema.prices import GenaiPrices, ListPrice
from schema.shipped import PLACEHOLDER, shipped_catalog

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = shipped_catalog()
PROVIDERS: dict[str, dict[str, Any]] = SHIPPED["providers"]
MODELS: dict[str, dict[str, Any]] = SHIPPED["models"]

# The providers issue 4 names, as the catalog names them.
ISSUE_PROVIDERS = {
    "OpenRouter": "openrouter", "Portkey": "portkey", "Featherless": "featherless", "Together AI": "together",
    "Fireworks": "fireworks", "DeepInfra": "deepinfra", "HuggingFace": "huggingface", "Google Gemini API": "gemini",
    "Google Vertex AI": "vertex", "Groq": "groq", "Cerebras": "cerebras", "xAI": "xai", "AIMO": "aimo",
    "Near AI": "near", "Fal.ai": "fal", "Anannas": "anannas", "Modelz": "modelz", "AiHubMix": "aihubmix",
    "Vercel AI Gateway": "vercel", "Akash": "akash", "Alibaba Cloud (DashScope)": "alibaba",
    "Alpaca Network": "alpaca", "Clarifai": "clarifai", "Cloudflare Workers AI": "cloudflare", "Helicone": "helicone",
    "Morpheus": "morpheus", "Nebius": "nebius", "Novita": "novita", "OneRouter": "onerouter",
    "Anthropic": "anthropic", "OpenAI": "openai",
}


def placeholders(spec: dict[str, Any]) -> list[str]:
    """Each variable the base URL names, once, in order."""
    return list(dict.fromkeys(PLACEHOLDER.findall(spec["base_url"])))


def every_variable() -> dict[str, str]:
    """A key for every shipped provider (each different) and every placeholder filled."""
    variables = {spec["api_key_env"]: f"sk-{name}-0123456789abcdef" for name, spec in PROVIDERS.items()}
    for spec in PROVIDERS.values():
        variables.update({name: "https://filled.example/v1" if spec["base_url"] == f"{{{name}}}" else "filled"
                          for name in placeholders(spec)})
    return variables


def shipped_config(document: dict[str, Any] | None = None, environ: dict[str, str] | None = None,
                   **kwargs: Any) -> GatewayConfig:
    return parse_config(document or {}, environ or {}, shipped=SHIPPED, **kwargs)


@pytest.fixture(scope="module")
def everything() -> GatewayConfig:
    return shipped_config(environ=every_variable())


# The data file


def test_the_catalog_has_every_provider_the_issue_names() -> None:
    assert len(PROVIDERS) >= 31
    missing = {issue: name for issue, name in ISSUE_PROVIDERS.items() if name not in PROVIDERS}
    assert not missing


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_each_provider_entry_is_valid_and_says_how_to_enable_it(name: str) -> None:
    raw = PROVIDERS[name]
    spec = ProviderSpec(**raw, name=name)
    assert spec.adapter in ("openai", "anthropic", "gemini")
    assert raw["auth"] == spec.auth  # written out, not left to the adapter's default
    assert re.fullmatch(r"[A-Z][A-Z0-9_]*", raw["api_key_env"])
    url = PLACEHOLDER.sub("x", raw["base_url"])
    assert url.startswith("https://") or raw["base_url"].startswith("{"), raw["base_url"]
    # Placeholders are account ids and regions, never a key (URLs are logged and shown).
    keys = {spec["api_key_env"] for spec in PROVIDERS.values()}
    assert not set(placeholders(raw)) & keys
    if not spec.verified:
        assert spec.notes, "an unverified entry says what is uncertain"


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_each_model_entry_is_valid_and_priced_from_a_published_source(model_id: str) -> None:
    raw = MODELS[model_id]
    spec = ModelSpec(**raw, id=model_id)
    assert set(spec.providers) <= set(PROVIDERS), "candidates are shipped providers"
    assert set(spec.upstream_ids) <= set(spec.providers)
    assert len(set(spec.providers)) == len(spec.providers)
    if spec.input_price_per_mtok is not None or spec.output_price_per_mtok is not None:
        assert spec.price_note, "an explicit price names where it was published"
    else:
        assert spec.price_source, "priced from genai-prices by an explicit source"


def test_with_every_key_set_over_100_models_are_routable_at_real_prices(everything: GatewayConfig) -> None:
    assert set(PROVIDERS) <= set(everything.providers)
    assert not everything.disabled_providers
    shipped = [model for model in everything.models if model in MODELS]
    assert len(shipped) >= 100
    catalog = Catalog(everything)
    for model in shipped:
        price = everything.prices[model]
        assert price.source.startswith("genai-prices:"), (model, price.source)
        assert price.price.input_per_mtok > 0 or price.price.output_per_mtok > 0, model
        assert catalog.route(model).price == price.price


def test_a_model_is_priced_at_no_less_than_any_candidate_lists_for_output(everything: GatewayConfig) -> None:
    """Failover hands a job to the next candidate at the price it was admitted at."""
    prices = GenaiPrices()
    for model, spec in everything.models.items():
        if model not in MODELS:
            continue
        for provider in spec.providers:
            list_provider = everything.providers[provider].price_provider
            listed = prices.lookup(list_provider, spec.upstream_id(provider)) if list_provider else None
            if listed is not None:
                assert everything.prices[model].price.output_per_mtok >= listed.output_usd_per_mtok, (model, provider)


def test_open_models_are_one_id_with_several_candidates(everything: GatewayConfig) -> None:
    llama = everything.models["llama-3.3-70b-instruct"]
    assert len(llama.providers) >= 5
    assert llama.upstream_id("groq") == "llama-3.3-70b-versatile"
    assert llama.upstream_id("cloudflare") == "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
    for model in ("deepseek-r1", "deepseek-v3", "qwen3-32b", "gpt-oss-120b"):
        assert len(everything.models[model].providers) >= 3, model


def test_the_shipped_file_is_read_once() -> None:
    assert shipped_catalog() is shipped_catalog()


# Enabling


def test_without_keys_only_the_mock_is_enabled() -> None:
    config = shipped_config()
    assert list(config.providers) == ["mock"]
    assert list(config.models) == list(MOCK_MODELS)
    assert set(config.disabled_providers) == set(PROVIDERS)
    assert config.disabled_providers["groq"].reason == "set GROQ_API_KEY to enable it"
    with pytest.raises(ModelNotFound):
        Catalog(config).route("gpt-4o")


def test_a_key_variable_enables_its_provider_and_only_its_models() -> None:
    config = shipped_config(environ={"GROQ_API_KEY": "gsk-only-groq"})
    assert set(config.providers) == {"groq", "mock"}
    assert config.providers["groq"].api_key.get_secret_value() == "gsk-only-groq"
    catalog = Catalog(config)
    assert catalog.route("llama-3.3-70b-instruct").routes == [Route(provider="groq",
                                                                    upstream_model="llama-3.3-70b-versatile")]
    assert catalog.route("groq/llama-3.3-70b-instruct").routes[0].upstream_model == "llama-3.3-70b-versatile"
    for disabled in ("gpt-4o", "together/llama-3.3-70b-instruct", "claude-sonnet-4-5"):
        with pytest.raises(ModelNotFound):
            catalog.route(disabled)
    assert all(set(spec.providers) == {"groq"} for model, spec in config.models.items() if model not in MOCK_MODELS)


def test_candidates_are_the_enabled_providers_in_catalog_order() -> None:
    keys = {"OPENROUTER_API_KEY": "or-1", "TOGETHER_API_KEY": "tg-1", "GROQ_API_KEY": "gsk-1"}
    route = Catalog(shipped_config(environ=keys)).route("llama-3.3-70b-instruct")
    assert route.routes == [
        Route(provider="groq", upstream_model="llama-3.3-70b-versatile"),
        Route(provider="together", upstream_model="meta-llama/Llama-3.3-70B-Instruct-Turbo"),
        Route(provider="openrouter", upstream_model="meta-llama/llama-3.3-70b-instruct"),
    ]
    # A model's price does not depend on which of its candidates are enabled.
    alone = Catalog(shipped_config(environ={"GROQ_API_KEY": "gsk-1"})).route("llama-3.3-70b-instruct")
    assert alone.price == route.price


def test_an_empty_variable_is_not_a_key() -> None:
    assert "groq" not in shipped_config(environ={"GROQ_API_KEY": ""}).providers


def test_placeholders_fill_the_base_url_or_keep_the_provider_off(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gatewayz.config"):
        config = shipped_config(environ={"CLOUDFLARE_API_TOKEN": "cf-token"})
    assert "cloudflare" not in config.providers
    assert config.disabled_providers["cloudflare"].reason == "base_url needs CLOUDFLARE_ACCOUNT_ID"
    assert "CLOUDFLARE_ACCOUNT_ID" in caplog.text
    config = shipped_config(environ={"CLOUDFLARE_API_TOKEN": "cf-token", "CLOUDFLARE_ACCOUNT_ID": "acc123"})
    assert config.providers["cloudflare"].base_url == "https://api.cloudflare.com/client/v4/accounts/acc123/ai/v1"
    vertex = shipped_config(environ={"VERTEX_ACCESS_TOKEN": "ya29.x", "VERTEX_PROJECT": "p1",
                                     "VERTEX_LOCATION": "europe-west4"}).providers["vertex"]
    assert vertex.base_url == ("https://europe-west4-aiplatform.googleapis.com/v1/projects/p1/locations/"
                               "europe-west4/publishers/google")
    assert vertex.adapter == "gemini" and vertex.auth == "bearer"


def test_a_configured_provider_with_missing_placeholders_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cloudflare.*CLOUDFLARE_ACCOUNT_ID"):
        shipped_config({"providers": {"cloudflare": {}}})


def test_a_key_variable_can_never_be_part_of_a_url() -> None:
    document = {"providers": {"leaky": {"base_url": "https://x.example/{LEAKY_KEY}/v1", "api_key_env": "LEAKY_KEY"}}}
    with pytest.raises(ConfigError, match="must not contain a key variable"):
        shipped_config(document, {"LEAKY_KEY": "sk-secret"})


# The operator's config over the shipped catalog


def test_an_entry_in_the_config_enables_a_shipped_provider_and_overrides_its_fields() -> None:
    config = shipped_config({"providers": {"groq": {"base_url": "http://127.0.0.1:9/openai/v1"}}})
    groq = config.providers["groq"]
    assert groq.base_url == "http://127.0.0.1:9/openai/v1"
    assert (groq.api_key_env, groq.price_provider, groq.api_key) == ("GROQ_API_KEY", "groq", None)
    assert "llama-3.3-70b-instruct" in config.models


def test_a_config_models_list_replaces_what_a_shipped_provider_serves() -> None:
    config = shipped_config({"providers": {"openai": {"models": ["gpt-4o-mini"]}}})
    assert config.providers["openai"].models == ["gpt-4o-mini"]
    assert set(config.models) == {"gpt-4o-mini", *MOCK_MODELS}


def test_enabled_false_turns_a_shipped_provider_off_even_with_its_key() -> None:
    config = shipped_config({"providers": {"groq": {"enabled": False}}}, {"GROQ_API_KEY": "gsk-1"})
    assert "groq" not in config.providers
    assert config.disabled_providers["groq"].reason == "enabled = false in the config"
    with pytest.raises(ConfigError, match="enabled is true or false"):
        shipped_config({"providers": {"groq": {"enabled": "yes"}}})


def test_a_config_model_replaces_the_shipped_entry_with_the_same_id() -> None:
    document = {"providers": {"acme": {"base_url": "http://acme/v1"}},
                "models": {"gpt-4o": {"providers": ["acme"], "input_price_per_mtok": 1, "output_price_per_mtok": 2}}}
    config = shipped_config(document, {"OPENAI_API_KEY": "sk-1"})
    assert config.models["gpt-4o"].providers == ["acme"]
    assert config.prices["gpt-4o"].source == "config"
    assert "gpt-4.1" in config.models  # the other shipped entries stay


def test_a_config_model_whose_providers_are_all_disabled_is_not_routable(caplog: pytest.LogCaptureFixture) -> None:
    document = {"models": {"my-llama": {"providers": ["groq"], "upstream_ids": {"groq": "llama-3.1-8b-instant"},
                                        "input_price_per_mtok": 1, "output_price_per_mtok": 1}}}
    with caplog.at_level(logging.WARNING, logger="gatewayz.config"):
        config = shipped_config(document)
    assert "my-llama" not in config.models
    assert "my-llama" in caplog.text and "GROQ_API_KEY" in caplog.text
    assert "my-llama" in shipped_config(document, {"GROQ_API_KEY": "gsk-1"}).models


@pytest.mark.parametrize("document", [{"providers": {"groq": 3}}, {"models": {"gpt-4o": "fast"}}])
def test_an_entry_that_is_not_a_table_is_a_config_error(document: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="expected a table"):
        shipped_config(document)


def test_a_config_model_naming_an_unknown_provider_is_still_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown providers"):
        shipped_config({"models": {"m": {"providers": ["ghost"], "input_price_per_mtok": 1}}})


def test_parse_config_without_a_shipped_catalog_is_the_operators_config_alone() -> None:
    config = parse_config({}, {"GROQ_API_KEY": "gsk-1"})
    assert list(config.providers) == ["mock"]
    assert config.disabled_providers == {}


# Prices


class PartialList:
    """A price list that knows OpenAI's gpt-4o only."""

    name = "partial"

    def knows(self, provider: str) -> bool:
        return provider == "openai"

    def lookup(self, provider: str, model: str) -> ListPrice | None:
        return ListPrice("openai", model, Decimal("2.5"), Decimal("10")) if model == "gpt-4o" else None


def test_shipped_models_the_price_list_cannot_price_are_left_out_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gatewayz.config"):
        config = shipped_config(environ={"OPENAI_API_KEY": "sk-1", "GROQ_API_KEY": "gsk-1"},
                                price_list=PartialList())
    assert set(config.models) == {"gpt-4o", *MOCK_MODELS}
    assert config.prices["gpt-4o"].source == "partial:openai:gpt-4o"
    assert config.providers["openai"].models == ["gpt-4o"]
    assert config.providers["groq"].price_provider is None  # the list does not know groq: a warning, not an error
    assert "gpt-4.1" in caplog.text
    # The operator's own unpriced model still refuses the config.
    with pytest.raises(ConfigError, match="no price for acme/house"):
        shipped_config({"providers": {"acme": {"base_url": "http://acme/v1", "models": ["house"]}}},
                       price_list=PartialList())


# Keys and the secrets file


def test_keys_never_appear_in_the_config_its_repr_or_its_logs(caplog: pytest.LogCaptureFixture) -> None:
    variables = every_variable()
    with caplog.at_level(logging.DEBUG):
        config = shipped_config(environ=variables)
    secrets = [value for name, value in variables.items() if name in {s["api_key_env"] for s in PROVIDERS.values()}]
    exposed = [repr(config), str(config), config.model_dump_json(), str(config.model_dump()), caplog.text]
    for secret in secrets:
        assert all(secret not in text for text in exposed)
    # Each provider holds its own key, and only it.
    for name, spec in PROVIDERS.items():
        assert config.providers[name].api_key.get_secret_value() == variables[spec["api_key_env"]]


def test_the_secrets_file_enables_providers(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    secrets.write_text("# provider keys\n\nexport GROQ_API_KEY=gsk-from-file\nCLOUDFLARE_API_TOKEN = 'cf-tok'\n"
                       'CLOUDFLARE_ACCOUNT_ID="acc9"\n')
    secrets.chmod(0o600)
    config = load_config(None, {}, credits_per_usd=Decimal(1), secrets_file=secrets)
    assert config.providers["groq"].api_key.get_secret_value() == "gsk-from-file"
    assert config.providers["cloudflare"].api_key.get_secret_value() == "cf-tok"
    assert config.providers["cloudflare"].base_url.endswith("/accounts/acc9/ai/v1")
    # The environment wins over the file.
    config = load_config(None, {"GROQ_API_KEY": "gsk-from-env"}, credits_per_usd=Decimal(1), secrets_file=secrets)
    assert config.providers["groq"].api_key.get_secret_value() == "gsk-from-env"


def test_a_bad_secrets_file_is_a_clear_error_that_shows_no_secret(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    secrets.write_text("GROQ_API_KEY=gsk-fine\nthis-line-has-sk-leaked-value\n")
    with pytest.raises(ConfigError, match=r"secrets.env, line 2: expected NAME=value") as raised:
        load_config(None, {}, credits_per_usd=Decimal(1), secrets_file=secrets)
    assert "sk-leaked" not in str(raised.value) and "gsk-fine" not in str(raised.value)
    with pytest.raises(ConfigError, match="cannot read the secrets file"):
        load_config(None, {}, credits_per_usd=Decimal(1), secrets_file=tmp_path / "missing.env")


def test_a_secrets_file_others_can_read_gets_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secrets = tmp_path / "secrets.env"
    secrets.write_text("GROQ_API_KEY=gsk-1\n")
    secrets.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="gatewayz.config"):
        load_config(None, {}, credits_per_usd=Decimal(1), secrets_file=secrets)
    assert "chmod 600" in caplog.text and "gsk-1" not in caplog.text


def test_load_config_can_leave_the_shipped_catalog_out() -> None:
    config = load_config(None, {"GROQ_API_KEY": "gsk-1"}, credits_per_usd=Decimal(1), shipped=False)
    assert list(config.providers) == ["mock"]


# README


def provider_table() -> str:
    """The README's table of shipped providers, from the catalog."""
    rows = ["| provider | enable with | base URL | protocol, auth | models | verified |",
            "|---|---|---|---|---|---|"]
    for name, spec in PROVIDERS.items():
        variables = " + ".join(f"`{variable}`" for variable in [spec["api_key_env"], *placeholders(spec)])
        served = sum(name in entry["providers"] for entry in MODELS.values())
        verified = "yes" if spec.get("verified", True) else "**no**"
        rows.append(f"| `{name}` | {variables} | `{spec['base_url']}` | {spec['adapter']}, {spec['auth']} "
                    f"| {served} | {verified} |")
    return "\n".join(rows)


def test_the_readme_lists_every_shipped_provider() -> None:
    readme = (ROOT / "README.md").read_text()
    table = provider_table()
    assert table in readme, f"README.md's provider table is out of date; it should read:\n\n{table}\n"
