"""Schemathesis over every operation of the OpenAPI document, in both run
modes, with every check (``--checks all``): no 5xx, every status and body
as documented, what the document allows accepted and what it refuses
refused with a 400, ``Allow`` as documented, auth enforced.

It runs the ``schemathesis`` CLI against a gateway of its own: the admin
token lets the fuzzer create coupons, move credits, revoke keys and refresh
provider lists, which must not touch the accounts, keys and catalog of the
session's shared gateway. The run is bounded (a fixed seed, a few examples
per operation) and replayable: the seed and the printed summary name every
failing case.

Deliberate narrowings, each needed so that a case tests the gateway's
contract rather than the test's setup:
- a valid ``model`` is replaced by a model of the test config that the
  endpoint serves, so that valid requests reach a worker;
- whole numbers are sent as JSON integers (JSON Schema's ``integer`` admits
  ``5.0``, which the gateway refuses on purpose);
- valid cases that break a constraint OpenAPI cannot express (``cursor`` or
  ``offset``; ``start`` before ``end``; a credit amount as a number with
  more than six decimals) are not sent;
- the fuzzer's own key and account are not revoked, limited or debited by
  its admin calls, and the fake upstream is not asked for embeddings of more
  than 3072 dimensions (all these in ``tests/support/fuzz_hooks.py``);
- redeeming a coupon that exists but expired may be a 400 (below).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.fake_upstream import FakeUpstream
from tests.conftest import MODES, gateway_config
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.gateway import ADMIN_TOKEN, Gateway, gateway_in_mode

ROOT = Path(__file__).resolve().parents[2]
SEED = 20261206
MAX_EXAMPLES = 10


@pytest.fixture(scope="module", params=MODES)
def fuzzed(request: pytest.FixtureRequest, upstream: FakeUpstream, fake_anthropic: FakeAnthropic,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = gateway_config(upstream.url, fake_anthropic.url)  # type: ignore[attr-defined]
    data_dir = tmp_path_factory.mktemp(f"fuzzed-{request.param}")
    # Failures the fuzzer provokes must not open circuits and turn later valid requests into 503s.
    with gateway_in_mode(request.param, config, data_dir, admin_token=ADMIN_TOKEN,
                         breaker_failures=1_000_000, retry_backoff=0.05) as gateway:
        yield gateway


def _config(gateway: Gateway, key: str) -> str:
    def text(value: str) -> str:
        return json.dumps(value)  # a JSON string is a TOML basic string

    lines = [
        f"base-url = {text(gateway.url)}",
        "[generation]",
        f"max-examples = {MAX_EXAMPLES}",
        'database = "none"',
        # Each scheme of the document, with its credential: the user key both ways, the admin token.
        "[auth.openapi.ApiKey]",
        f"bearer = {text(key)}",
        "[auth.openapi.ApiKeyHeader]",
        f"api_key = {text(key)}",
        "[auth.openapi.AdminToken]",
        f"bearer = {text(ADMIN_TOKEN)}",
    ]
    # A code that exists but expired, or that others used up, is refused with 400 (`coupon_expired`,
    # `coupon_exhausted`): the coupon's state, which the fuzzer's own admin calls set, not the request's shape.
    lines += ["[[operations]]", 'include-path = "/user/coupons/redeem"',
              "[operations.checks.positive_data_acceptance]",
              'expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]']
    return "\n".join(lines) + "\n"


def test_schemathesis_finds_nothing(fuzzed: Gateway, tmp_path: Path) -> None:
    key = fuzzed.create_key("1000000")
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(fuzzed, key))
    environ = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.support.fuzz_hooks",
        "FUZZ_KEY_ID": str(fuzzed.key_id(key)),
        "FUZZ_ACCOUNT_ID": str(fuzzed.account_id(key)),
    }
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color",
        "run", f"{fuzzed.url}/openapi.json", "--checks", "all", "--seed", str(SEED), "--workers", "1",
        "--request-timeout", "60", "--generation-database", "none", "--output-sanitize", "false",
    ]
    ran = subprocess.run(command, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=900)
    print(ran.stdout[-20_000:], ran.stderr[-5_000:])
    assert ran.returncode == 0, ran.stdout[-20_000:] + ran.stderr[-5_000:]
