"""Structured logs, in both run modes as real processes (``gatewayz serve``;
ingress, worker and billing apart) with ``GATEWAYZ_LOG_FORMAT=json`` at
debug level: every line is one JSON object; each request to a hot endpoint
gets one line at the ingress with its job, key, account, model, provider,
status, tokens, cost, queue wait and latency; worker lines about a job name
it in a field; and no secret the processes know or were sent appears in any
line (API keys, the admin token, the key secret, the provider's key, the
database password)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from loadtests.fake_upstream import FakeUpstream
from scheduler.logs import JOB_ID, JsonFormatter, Redactor, TextFormatter
from tests.conftest import MODES
from tests.support.cluster import running_cluster
from tests.support.processes import background, free_port, gatewayz, wait_until_healthy
from tests.support.servers import ServerThread
from tests.support.services import distributed_services

PROVIDER_KEY = "sk-provider-secret-4f1d9b7e2c"
ADMIN_TOKEN = "admin-token-secret-8e3a51c0"
KEY_SECRET = "key-secret-secret-2b7c9d14"
DB_PASSWORD = "db-password-secret-6a0f"
CONFIG = """
[providers.fake]
adapter = "openai"
base_url = "{upstream}/v1"
api_key_env = "FAKE_PROVIDER_KEY"
models = ["fake-small"]

[models."fake-small"]
providers = ["fake"]
input_price_per_mtok = 1.00
output_price_per_mtok = 2.00
"""


class Logged:
    """The processes' captured output, and the API key that was used."""

    def __init__(self, url: str, key: str, logs: list[Path]) -> None:
        self.url, self.key, self.logs = url, key, logs

    def text(self) -> str:
        return "\n".join(path.read_text() for path in self.logs)

    def records(self) -> list[dict[str, Any]]:
        lines = [line for line in self.text().splitlines() if line.strip()]
        return [orjson.loads(line) for line in lines]


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with ServerThread(FakeUpstream(api_key=PROVIDER_KEY).app, name="logs upstream") as server:
        yield server.url


def _environ(directory: Path, upstream: str) -> dict[str, str]:
    config = directory / "gatewayz.toml"
    config.write_text(CONFIG.format(upstream=upstream))
    return {"GATEWAYZ_CONFIG": str(config), "GATEWAYZ_DATA_DIR": str(directory), "GATEWAYZ_LOG_FORMAT": "json",
            "GATEWAYZ_LOG_LEVEL": "debug", "GATEWAYZ_ADMIN_TOKEN": ADMIN_TOKEN, "GATEWAYZ_KEY_SECRET": KEY_SECRET,
            "FAKE_PROVIDER_KEY": PROVIDER_KEY}


@pytest.fixture(scope="module", params=MODES)
def logged(request: pytest.FixtureRequest, upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    """Requests already made through the gateway (``requests_made``), its processes stopped and flushed."""
    directory = tmp_path_factory.mktemp(f"logs-{request.param}")
    environ = _environ(directory, upstream)
    if request.param == "embedded":
        created = gatewayz("keys", "create", "--name", "logs", "--credits", "1", env=environ, cwd=directory)
        assert created.returncode == 0, created.stderr
        key, port = created.stdout.split()[-1], free_port()
        with background("serve", "--port", str(port), env=environ, cwd=directory, log=directory / "serve.log") as serve:
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(url, serve, directory / "serve.log")
            requests_made(url, key)
        yield Logged(url, key, [directory / "serve.log"])
        return
    # A database of its own, reached with a password in its URL (trust
    # authentication ignores it; the processes still hold it).
    with distributed_services(["fake"]) as services:
        database_url = services.database_url.replace("postgres@", f"postgres:{DB_PASSWORD}@")
        with running_cluster(directory, upstream, config=CONFIG.format(upstream=upstream),
                             **{**environ, "GATEWAYZ_DATABASE_URL": database_url}) as cluster:
            cluster.worker("worker")
            cluster.start("billing", "billing")
            cluster.wait_for_workers(1)
            requests_made(cluster.url, cluster.key)
            settled(cluster.url, cluster.key)
            cluster.stack.close()  # every process stopped: what they buffered is written
        yield Logged(cluster.url, cluster.key, [directory / f"{name}.log" for name in ("ingress", "worker", "billing")])


def requests_made(url: str, key: str) -> None:
    """A JSON answer, a stream, a failed upstream call, a wrong key, an admin call."""
    with httpx.Client(base_url=url, timeout=30, headers={"authorization": f"Bearer {key}"}) as client:
        body = {"model": "fake-small", "messages": [{"role": "user", "content": "hello logs"}]}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        streamed = client.post("/v1/chat/completions", json={**body, "stream": True})
        assert streamed.status_code == 200 and "[DONE]" in streamed.text
        failing = {**body, "messages": [{"role": "user", "content": "fail:500"}]}
        assert client.post("/v1/chat/completions", json=failing).status_code >= 500
        wrong = client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}x"})
        assert wrong.status_code == 401
        admin = client.get("/admin/keys/1", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert admin.status_code == 200
        client.get("/user/balance", headers={"x-api-key": key})


def settled(url: str, key: str, timeout: float = 20) -> None:
    """Until the key's account holds nothing: billing has settled every job."""
    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/user/balance", headers={"authorization": f"Bearer {key}"}).json()["held_micros"]:
        assert time.monotonic() < deadline, "the jobs were never settled"
        time.sleep(0.1)


def test_every_line_is_one_json_object_with_time_level_and_logger(logged: Logged) -> None:
    records = logged.records()

    assert records
    assert all({"time", "level", "logger"} <= set(record) for record in records)


def test_each_hot_request_gets_one_line_with_what_it_did(logged: Logged) -> None:
    lines = [record for record in logged.records() if record.get("event") == "request"]

    assert [line["status"] for line in lines] == [200, 200, 502, 401]
    answered, streamed, failed, refused = lines
    for line in (answered, streamed):
        assert line["job_id"].startswith("job_")
        assert line["model"] == "fake-small" and line["provider"] == "fake"
        assert isinstance(line["key_id"], int) and isinstance(line["account_id"], int)
        assert line["input_tokens"] > 0 and line["output_tokens"] == 3  # "Echo: hello logs"
        assert float(line["cost"]) > 0
        assert line["queue_ms"] >= 0 and line["latency_ms"] > 0
        assert line["trace_id"] is None  # no exporter configured
    assert failed["job_id"].startswith("job_") and failed["input_tokens"] is None
    assert refused["job_id"] is None and refused["path"] == "/v1/chat/completions"


def test_worker_lines_about_a_job_name_it_in_a_field(logged: Logged) -> None:
    failed = [record for record in logged.records() if record.get("event") == "request" and record["status"] == 502]
    job_id = failed[0]["job_id"]

    about = [record for record in logged.records()
             if record["logger"].startswith(("workers.", "billing.")) and job_id in record.get("message", "")]

    assert about, "no line says why the job failed"
    assert all(record["job_id"] == job_id for record in about)


def test_no_secret_appears_in_any_line(logged: Logged) -> None:
    text = logged.text()

    assert "hello logs" in text or "request" in text  # the logs were captured
    for secret in (logged.key, ADMIN_TOKEN, KEY_SECRET, PROVIDER_KEY, DB_PASSWORD, logged.key[3:]):
        assert secret not in text
    assert ":guest@" not in text  # the broker's password, which aiormq logs its URL with at debug level


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("gatewayz.test", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_the_formatters_name_the_current_job_and_redact_what_they_are_told() -> None:
    redact = Redactor(["hunter22"])
    token = JOB_ID.set("job_current")
    try:
        json_line = orjson.loads(JsonFormatter(redact).format(_record("password %s at amqp://u:pw@host/", "hunter22")))
        text_line = TextFormatter(redact).format(_record("settled", job_ids=["job_a"]))
    finally:
        JOB_ID.reset(token)

    assert json_line["job_id"] == "job_current"
    assert json_line["message"] == "password [redacted] at amqp://u:[redacted]@host/"
    assert text_line.endswith("settled [job job_current]")
    explicit = orjson.loads(JsonFormatter(redact).format(_record("batch", job_ids=["job_a", "job_b"])))
    assert explicit["job_ids"] == ["job_a", "job_b"] and "job_id" not in explicit
