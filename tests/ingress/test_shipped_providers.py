"""Shipped providers behind a running gateway: each provider gets its own key
and nobody else's, in the header its catalog entry says, and no key ever
shows in an answer, an error or the logs; the ``gatewayz`` command reads the
secrets file and refuses to run a pool for a disabled provider."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtests.fake_upstream import FakeUpstream
from schema.catalog import parse_config
from schema.shipped import shipped_catalog
from tests.support.gateway import Gateway, running_gateway
from tests.support.processes import background, free_port, gatewayz, wait_for_line, wait_until_healthy
from tests.support.servers import ServerThread

KEYS = {
    "GROQ_API_KEY": "gsk-groq-secret-0123456789",
    "TOGETHER_API_KEY": "tg-together-secret-0123456789",
    "FAL_KEY": "fal-secret-0123456789",
    "PORTKEY_API_KEY": "pk-portkey-secret-0123456789",
    # Enabled too, though never called: its key must not leak either.
    "OPENAI_API_KEY": "sk-openai-secret-0123456789",
}
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    """One fake upstream per called provider; groq and together check their own key."""
    upstreams = {"groq": FakeUpstream(api_key=KEYS["GROQ_API_KEY"]),
                 "together": FakeUpstream(api_key=KEYS["TOGETHER_API_KEY"]),
                 "fal": FakeUpstream(), "portkey": FakeUpstream()}
    servers = {name: ServerThread(fake.app, name=f"fake {name}") for name, fake in upstreams.items()}
    for server in servers.values():
        server.__enter__()
    try:
        for name, fake in upstreams.items():
            fake.url = servers[name].url  # type: ignore[attr-defined]
        yield upstreams
    finally:
        for server in servers.values():
            server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def gateway(fakes: dict[str, FakeUpstream], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    document: dict[str, Any] = {
        # The shipped entries, pointed at loopback: everything else (auth style, key variable) is the catalog's.
        "providers": {name: {"base_url": f"{fake.url}/v1"} for name, fake in fakes.items()},  # type: ignore[attr-defined]
        "models": {
            "fal-llama": {"providers": ["fal"], "upstream_ids": {"fal": "meta-llama/llama-3.1-8b-instruct"},
                          "price_source": "openrouter:meta-llama/llama-3.1-8b-instruct"},
            "portkey-4o": {"providers": ["portkey"], "upstream_ids": {"portkey": "@openai-prod/gpt-4o"},
                           "price_source": "openai:gpt-4o"},
        },
    }
    config = parse_config(document, KEYS, shipped=shipped_catalog())
    with running_gateway(config, tmp_path_factory.mktemp("shipped")) as running:
        yield running


def chat(gateway: Gateway, key: str, model: str, content: str = "hello", stream: bool = False) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}/chat/completions", headers={"authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [{"role": "user", "content": content}], "stream": stream},
                      timeout=30)


def test_each_provider_gets_only_its_own_key_in_its_own_header(gateway: Gateway,
                                                                fakes: dict[str, FakeUpstream]) -> None:
    key = gateway.create_key("10")
    before = {name: len(fake.requests) for name, fake in fakes.items()}  # the module's other tests call them too
    for model in ("groq/llama-3.1-8b-instruct", "together/llama-3.1-8b-instruct", "fal-llama", "portkey-4o"):
        for stream in (False, True):
            response = chat(gateway, key, model, stream=stream)
            assert response.status_code == 200, (model, response.text)
    assert fakes["groq"].requests[-1]["body"]["model"] == "llama-3.1-8b-instant"
    assert fakes["together"].requests[-1]["body"]["model"] == "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo"
    expected = {
        "groq": {"authorization": f"Bearer {KEYS['GROQ_API_KEY']}"},
        "together": {"authorization": f"Bearer {KEYS['TOGETHER_API_KEY']}"},
        "fal": {"authorization": f"Key {KEYS['FAL_KEY']}"},
        "portkey": {"x-portkey-api-key": KEYS["PORTKEY_API_KEY"]},
    }
    for name, fake in fakes.items():
        requests = fake.requests[before[name]:]
        assert len(requests) == 2
        for request in requests:
            headers = request["headers"]
            assert {header: headers.get(header) for header in expected[name]} == expected[name]
            own = KEYS[shipped_catalog()["providers"][name]["api_key_env"]]
            others = [secret for secret in KEYS.values() if secret != own]
            seen = str(request)
            assert not [secret for secret in others if secret in seen], f"{name} saw another provider's key"
            if name == "portkey":
                assert "authorization" not in headers  # the client's gateway key is never forwarded either


def test_no_key_shows_in_any_answer_error_or_log(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    key = gateway.create_key("10")
    headers = {"authorization": f"Bearer {key}"}
    with caplog.at_level(logging.DEBUG):
        answers = [
            httpx.get(f"{gateway.base_url}/models", headers=headers),
            httpx.get(f"{gateway.base_url}/models/groq/llama-3.1-8b-instruct", headers=headers),
            chat(gateway, key, "groq/llama-3.1-8b-instruct"),
            chat(gateway, key, "together/llama-3.1-8b-instruct", "hello", stream=True),
            chat(gateway, key, "groq/llama-3.1-8b-instruct", "fail:500"),
            chat(gateway, key, "groq/llama-3.1-8b-instruct", "fail:401"),
            chat(gateway, key, "together/llama-3.1-8b-instruct", "fail:429", stream=True),
            chat(gateway, key, "claude-sonnet-4-5"),  # anthropic is disabled: not routable
            httpx.get(f"{gateway.url}/user/balance", headers=headers),
        ]
    statuses = [answer.status_code for answer in answers]
    assert statuses == [200, 200, 200, 200, 502, 502, 429, 404, 200]
    assert "refused the gateway's credentials" in answers[5].json()["error"]["message"]
    listed = {model["id"] for model in answers[0].json()["data"]}
    assert {"llama-3.3-70b-instruct", "gpt-4o", "groq/llama-3.1-8b-instruct"} <= listed
    assert not any(model.startswith("claude") for model in listed)
    exposed = "\n".join([*(answer.text for answer in answers), *(str(answer.headers) for answer in answers),
                         caplog.text])
    assert not [variable for variable, secret in KEYS.items() if secret in exposed]


# The command


def test_serve_reads_the_secrets_file_and_never_prints_a_key(tmp_path: Path) -> None:
    secrets = tmp_path / "gatewayz.env"
    secrets.write_text(f"GROQ_API_KEY={KEYS['GROQ_API_KEY']}\n")
    secrets.chmod(0o600)
    env = {"GATEWAYZ_DATA_DIR": str(tmp_path / "data"), "GATEWAYZ_BROKER_URL": "", "GATEWAYZ_REDIS_URL": "",
           "GATEWAYZ_DATABASE_URL": "", "GATEWAYZ_CONFIG": "", "GATEWAYZ_SECRETS_FILE": str(secrets),
           "GATEWAYZ_LOG_LEVEL": "debug", "GROQ_API_KEY": ""}
    port, log = free_port(), tmp_path / "serve.log"
    with background("serve", "--port", str(port), env=env, cwd=tmp_path, log=log) as serve:
        dev_key = re.search(r"OPENAI_API_KEY=(gz-\S+)", wait_for_line(log, "OPENAI_API_KEY=", serve)).group(1)
        wait_until_healthy(f"http://127.0.0.1:{port}", serve, log)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"authorization": f"Bearer {dev_key}"})
    llama = next(model for model in models.json()["data"] if model["id"] == "llama-3.3-70b-instruct")
    assert llama["providers"] == ["groq"]
    assert KEYS["GROQ_API_KEY"] not in models.text
    assert KEYS["GROQ_API_KEY"] not in log.read_text()


def test_worker_refuses_a_disabled_provider_and_says_how_to_enable_it(tmp_path: Path) -> None:
    env = {"GATEWAYZ_DATA_DIR": str(tmp_path), "GATEWAYZ_CONFIG": "", "GATEWAYZ_SECRETS_FILE": "",
           "GATEWAYZ_BROKER_URL": "amqp://127.0.0.1:1/", "GATEWAYZ_REDIS_URL": "redis://127.0.0.1:1",
           "GROQ_API_KEY": ""}
    result = gatewayz("worker", "--provider", "groq", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "provider 'groq' is disabled: set GROQ_API_KEY to enable it" in result.stderr
