"""The ``gatewayz`` command as a newcomer and an operator use it, as real
processes: first start, keys, and the distributed roles."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import openai
import psutil
import pytest

from tests.support.processes import background, free_port, gatewayz, wait_for_line, wait_until_healthy
from tests.support.services import Distributed, distributed_services

HELLO = [{"role": "user", "content": "hello gateway"}]


def embedded_env(tmp_path: Path) -> dict[str, str]:
    return {"GATEWAYZ_DATA_DIR": str(tmp_path / "data"), "GATEWAYZ_BROKER_URL": "", "GATEWAYZ_REDIS_URL": "",
            "GATEWAYZ_DATABASE_URL": "", "GATEWAYZ_CONFIG": ""}


def test_first_start_then_keys_while_serving(tmp_path: Path) -> None:
    env, port = embedded_env(tmp_path), free_port()
    log = tmp_path / "serve.log"
    with background("serve", "--port", str(port), env=env, cwd=tmp_path, log=log) as serve:
        output = wait_for_line(log, "OPENAI_API_KEY=", serve)
        wait_until_healthy(f"http://127.0.0.1:{port}", serve, log)
        dev_key = re.search(r"OPENAI_API_KEY=(gz-\S+)", output).group(1)
        assert "5 free credits" in output

        client = openai.OpenAI(api_key=dev_key, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
        reply = client.chat.completions.create(model="mock/echo", messages=HELLO)
        assert reply.choices[0].message.content == "You said: hello gateway"

        created = gatewayz("keys", "create", "--name", "alice", "--credits", "10", env=env, cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        alice = created.stdout.strip().splitlines()[-1]
        assert alice.startswith("gz-") and alice != dev_key
        balance = httpx.get(f"http://127.0.0.1:{port}/user/balance", headers={"authorization": f"Bearer {alice}"})
        assert balance.json()["balance"] == "10.000000"

        reconciled = gatewayz("billing", "reconcile", env=env, cwd=tmp_path)
        assert (reconciled.returncode, reconciled.stdout.strip()) == (0, "every account reconciles with the ledger")

    # A second start on the same data makes no new development key.
    log2 = tmp_path / "serve2.log"
    with background("serve", "--port", str(port), env=env, cwd=tmp_path, log=log2) as serve:
        wait_until_healthy(f"http://127.0.0.1:{port}", serve, log2)
        assert "OPENAI_API_KEY=" not in log2.read_text()


def test_serve_runs_each_pool_at_the_concurrency_asked(tmp_path: Path) -> None:
    env, port = {**embedded_env(tmp_path), "GATEWAYZ_ADMIN_TOKEN": "admin-secret"}, free_port()
    log = tmp_path / "serve.log"
    with background("serve", "--port", str(port), "--concurrency", "3", env=env, cwd=tmp_path, log=log) as serve:
        wait_until_healthy(f"http://127.0.0.1:{port}", serve, log)
        pools = httpx.get(f"http://127.0.0.1:{port}/admin/pools", headers={"authorization": "Bearer admin-secret"})
    assert pools.status_code == 200, pools.text
    assert {pool["provider"]: pool["concurrency"] for pool in pools.json()["data"]}["mock"] == 3


@pytest.mark.parametrize("credits", ["-1", "lots", "0.0000001"])
def test_keys_create_refuses_bad_credits(tmp_path: Path, credits: str) -> None:
    result = gatewayz("keys", "create", "--name", "x", "--credits", credits, env=embedded_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "--credits" in result.stderr


@pytest.mark.parametrize(("toml", "message"), [
    ('[providers.x]\nadapter = "openai"\n', "base_url is required"),
    ('[providers.local]\nbase_url = "http://127.0.0.1:1/v1"\nmodels = ["llama"]\n', "no price for local/llama"),
], ids=["no base_url", "unpriced model"])
def test_bad_config_is_a_clear_error(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "gatewayz.toml"
    config.write_text(toml)
    result = gatewayz("serve", "--config", str(config), env=embedded_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr


def test_list_prices_use_the_gateway_exchange_rate(tmp_path: Path) -> None:
    config = tmp_path / "listed.toml"
    config.write_text('[providers.openai]\nbase_url = "http://127.0.0.1:1/v1"\nmodels = ["gpt-4o-mini"]\n\n'
                      '[pricing]\nmarkup_percent = 10\n')
    env, port = {**embedded_env(tmp_path), "GATEWAYZ_CREDITS_PER_USD": "100"}, free_port()
    log = tmp_path / "serve.log"
    with background("serve", "--port", str(port), "--config", str(config), env=env, cwd=tmp_path, log=log) as serve:
        key = re.search(r"OPENAI_API_KEY=(gz-\S+)", wait_for_line(log, "OPENAI_API_KEY=", serve)).group(1)
        wait_until_healthy(f"http://127.0.0.1:{port}", serve, log)
        model = httpx.get(f"http://127.0.0.1:{port}/v1/models/openai/gpt-4o-mini",
                          headers={"authorization": f"Bearer {key}"}).json()
    # OpenAI's 0.15 / 0.60 US dollars per million tokens, at 100 credits a dollar, plus 10 %.
    assert model["pricing"] == {"input_per_mtok": "16.5", "output_per_mtok": "66", "unit": "credits"}
    assert model["price_source"] == "genai-prices:openai:gpt-4o-mini"


def test_worker_refuses_an_unknown_provider(tmp_path: Path) -> None:
    env = {**embedded_env(tmp_path), "GATEWAYZ_BROKER_URL": "amqp://127.0.0.1:1/", "GATEWAYZ_REDIS_URL": "redis://127.0.0.1:1"}
    result = gatewayz("worker", "--provider", "nope", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "unknown provider 'nope'" in result.stderr


@pytest.mark.parametrize(("role", "missing"), [
    (["worker", "--provider", "mock"], "GATEWAYZ_BROKER_URL, GATEWAYZ_REDIS_URL"),
    (["ingress"], "GATEWAYZ_BROKER_URL, GATEWAYZ_REDIS_URL"),
    (["billing"], "GATEWAYZ_BROKER_URL"),
])
def test_distributed_roles_refuse_to_run_without_their_services(tmp_path: Path, role: list[str], missing: str) -> None:
    result = gatewayz(*role, env=embedded_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert f"this role runs distributed: set {missing}" in result.stderr


def test_migrate_does_not_need_a_valid_catalog(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("not toml at all [")
    result = gatewayz("migrate", env={**embedded_env(tmp_path), "GATEWAYZ_CONFIG": str(config)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def distributed_key(services: Distributed, tmp_path: Path, name: str) -> tuple[dict[str, str], str]:
    """The distributed roles' environment, on a migrated database, and a key of ``name`` with 1 credit."""
    env = {**services.environ(), "GATEWAYZ_KEY_SECRET": "cli-test-secret", "GATEWAYZ_DATA_DIR": str(tmp_path),
           "GATEWAYZ_CONFIG": ""}
    assert gatewayz("migrate", env=env, cwd=tmp_path).returncode == 0
    created = gatewayz("keys", "create", "--name", name, "--credits", "1", env=env, cwd=tmp_path)
    return env, created.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def distributed_roles(tmp_path: Path, env: dict[str, str], *, worker_env: dict[str, str] | None = None,
                      worker_dir: Path | None = None) -> Iterator[int]:
    """An ingress, a mock worker (in ``worker_dir`` with ``worker_env``, if
    given) and billing as processes, until the block ends; yields the port."""
    port = free_port()
    with (
        background("ingress", "--port", str(port), env=env, cwd=tmp_path, log=tmp_path / "ingress.log") as ingress,
        background("worker", "--provider", "mock", "--concurrency", "4", env=worker_env or env,
                   cwd=worker_dir or tmp_path, log=tmp_path / "worker.log") as worker,
        background("billing", env=env, cwd=tmp_path, log=tmp_path / "billing.log"),
    ):
        wait_until_healthy(f"http://127.0.0.1:{port}", ingress, tmp_path / "ingress.log")
        wait_for_line(tmp_path / "worker.log", "pool mock serving", worker)
        yield port


def test_distributed_roles_as_separate_processes(tmp_path: Path) -> None:
    with distributed_services(["mock"]) as services:
        env, key = distributed_key(services, tmp_path, "bob")
        with distributed_roles(tmp_path, env) as port:
            client = openai.OpenAI(api_key=key, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
            chunks = list(client.chat.completions.create(model="mock/echo", messages=HELLO, stream=True))
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: hello gateway"
            # 2 prompt words at 1.00 + 4 reply words at 2.00 = 10 micro-credits, settled by the billing process.
            assert _settled_balance(port, key, unchanged=1_000_000) == 1_000_000 - 10
        assert gatewayz("billing", "reconcile", env=env, cwd=tmp_path).returncode == 0
        tampered = asyncpg_execute(services.database_url,
                                   "UPDATE accounts SET available = available + 5 WHERE name = 'bob'")
        result = gatewayz("billing", "reconcile", env=env, cwd=tmp_path)
        assert result.returncode == 1 and tampered
        assert "available recorded 999995, recomputed 999990" in result.stdout


def test_a_worker_without_a_database_url_serves_jobs_and_makes_no_database(tmp_path: Path) -> None:
    with distributed_services(["mock"]) as services:
        env, key = distributed_key(services, tmp_path, "carol")
        worker_dir = tmp_path / "worker"
        worker_dir.mkdir()
        # The worker alone has no database URL, and a data directory of its own.
        worker_env = {**env, "GATEWAYZ_DATABASE_URL": "", "GATEWAYZ_DATA_DIR": str(worker_dir / "data")}
        with distributed_roles(tmp_path, env, worker_env=worker_env, worker_dir=worker_dir) as port:
            client = openai.OpenAI(api_key=key, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
            reply = client.chat.completions.create(model="mock/echo", messages=HELLO)
            assert reply.choices[0].message.content == "You said: hello gateway"
            assert _settled_balance(port, key, unchanged=1_000_000) == 1_000_000 - 10
        assert list(worker_dir.rglob("*.db")) == []
        assert not (worker_dir / "data").exists()


def asyncpg_execute(url: str, statement: str) -> str:
    async def run() -> str:
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return await connection.execute(statement)
        finally:
            await connection.close()

    return asyncio.run(run())


def _settled_balance(port: int, key: str, *, unchanged: int) -> int:
    """The balance once settlement has moved it (or after 5 s)."""
    for _ in range(100):
        response = httpx.get(f"http://127.0.0.1:{port}/user/balance", headers={"authorization": f"Bearer {key}"})
        if response.json()["balance_micros"] != unchanged:
            break
        time.sleep(0.05)
    return response.json()["balance_micros"]


def test_ingress_runs_several_processes_on_one_port(tmp_path: Path) -> None:
    with distributed_services(["mock"]) as services:
        env, key = distributed_key(services, tmp_path, "carol")
        port, log = free_port(), tmp_path / "ingress.log"
        with (
            background("ingress", "--port", str(port), "--workers", "2", env=env, cwd=tmp_path, log=log) as ingress,
            background("worker", "--provider", "mock", "--concurrency", "4", env=env, cwd=tmp_path,
                       log=tmp_path / "worker.log") as worker,
        ):
            first = _listening(ingress, port, 2, log)
            wait_for_line(tmp_path / "worker.log", "pool mock serving", worker)
            assert _answers(port, key, 8)

            # A process that dies is replaced; the port keeps answering meanwhile.
            killed = next(iter(first))
            psutil.Process(killed).kill()
            assert _answers(port, key, 4)
            second = _listening(ingress, port, 2, log, without=killed)
            assert killed not in second and len(first & second) == 1
            assert _answers(port, key, 8)

            ingress.send_signal(signal.SIGTERM)
            assert ingress.wait(timeout=30) == 0
            assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                           for pid in second)


def test_ingress_processes_that_cannot_start_stop_the_others(tmp_path: Path) -> None:
    # Nothing listens on port 1: every process's lifespan fails to reach the broker.
    env = {**embedded_env(tmp_path), "GATEWAYZ_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/",
           "GATEWAYZ_REDIS_URL": "redis://127.0.0.1:1/0", "GATEWAYZ_KEY_SECRET": "cli-test-secret"}
    result = gatewayz("ingress", "--port", str(free_port()), "--workers", "2", env=env, cwd=tmp_path)
    assert result.returncode == 3
    assert "an ingress process could not start" in result.stderr


def test_ingress_refuses_a_port_in_use(tmp_path: Path) -> None:
    env = {**embedded_env(tmp_path), "GATEWAYZ_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/",
           "GATEWAYZ_REDIS_URL": "redis://127.0.0.1:1/0", "GATEWAYZ_KEY_SECRET": "cli-test-secret"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = gatewayz("ingress", "--port", str(port), "--workers", "2", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def _listening(ingress: subprocess.Popen[bytes], port: int, count: int, log: Path, *, without: int = 0) -> set[int]:
    """The supervisor's children once ``count`` of them listen on ``port`` (none of them ``without``)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert ingress.poll() is None, log.read_text()
        listening = set()
        for child in psutil.Process(ingress.pid).children():
            try:
                if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in child.net_connections("tcp")):
                    listening.add(child.pid)
            except psutil.NoSuchProcess:
                continue
        if len(listening) == count and without not in listening:
            return listening
        time.sleep(0.1)
    raise AssertionError(f"{count} processes never listened on {port}:\n{log.read_text()}")


def _answers(port: int, key: str, requests: int) -> bool:
    """Each request on a connection of its own, so the kernel spreads them over the processes."""
    for _ in range(requests):
        with openai.OpenAI(api_key=key, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0) as client:
            reply = client.chat.completions.create(model="mock/echo", messages=HELLO)
            assert reply.choices[0].message.content == "You said: hello gateway"
    return True
