"""``gatewayz keys create`` with spending limits and an expiry, as a real
process, and its refusals of bad values."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from billing.keys import KeyRecord, key_record
from billing.limits import KeyLimits
from ingress.cli import main
from schema.database import create_engine
from schema.settings import Settings
from schema.tables import api_keys
from tests.ingress.test_cli import embedded_env
from tests.support.processes import gatewayz


def newest_key(data_dir: Path) -> KeyRecord:
    async def read() -> KeyRecord:
        engine = create_engine(Settings(data_dir=data_dir, database_url=None))
        try:
            async with engine.connect() as connection:
                key_id = (await connection.execute(select(api_keys.c.id).order_by(api_keys.c.id.desc()))).scalar()
            return await key_record(engine, key_id)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_keys_create_with_limits_and_expiry(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    created = gatewayz("keys", "create", "--name", "capped", "--credits", "20", "--daily-limit", "0.5",
                       "--monthly-limit", "3", "--total-limit", "10", "--expires-in", "12h", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    lines = created.stdout.strip().splitlines()
    assert lines[-1].startswith("gz-")
    assert "  daily limit: 0.500000 credits" in lines and "  total limit: 10.000000 credits" in lines
    key = newest_key(tmp_path / "data")
    assert key.limits == KeyLimits(daily=500_000, monthly=3_000_000, total=10_000_000)
    assert key.expires_at is not None and abs(key.expires_at - (time.time() + 12 * 3600)) < 60
    assert key.spend == {"day": 0, "month": 0, "total": 0}

    plain = gatewayz("keys", "create", "--name", "plain", env=env, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    key = newest_key(tmp_path / "data")
    assert (key.limits, key.expires_at, key.spend) == (KeyLimits(), None, None)


@pytest.mark.parametrize(("option", "value"), [
    ("--daily-limit", "-1"), ("--total-limit", "1e30"), ("--monthly-limit", "0.0000001"), ("--daily-limit", "lots"),
    ("--expires-in", "30x"), ("--expires-in", "0h"), ("--expires-in", "99999d"), ("--expires-in", "-5d"),
])
def test_keys_create_refuses_bad_limits_and_durations(tmp_path: Path, option: str, value: str) -> None:
    # In process: the values are refused while the command line is parsed, before anything opens.
    result = CliRunner().invoke(main, ["keys", "create", "--name", "x", "--credits", "1", option, value],
                                env=embedded_env(tmp_path))
    assert result.exit_code == 2
    assert option in result.output
    assert not (tmp_path / "data").exists(), "nothing was created"


PLANS = """
[plans.pro]
requests_per_minute = 600
priority = "realtime"
"""


def test_keys_create_with_a_plan(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    config = tmp_path / "gatewayz.toml"
    config.write_text(PLANS)
    created = gatewayz("keys", "create", "--name", "pro", "--plan", "pro", "--config", str(config), env=env,
                       cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert "  plan: pro" in created.stdout.splitlines()
    assert newest_key(tmp_path / "data").plan == "pro"

    # The config can come from GATEWAYZ_CONFIG too.
    unknown = gatewayz("keys", "create", "--name", "gold", "--plan", "gold",
                       env={**env, "GATEWAYZ_CONFIG": str(config)}, cwd=tmp_path)
    assert unknown.returncode == 2
    assert "unknown plan 'gold'; the config has default, pro" in unknown.stderr
    assert newest_key(tmp_path / "data").name == "pro", "nothing was created"

    plain = gatewayz("keys", "create", "--name", "plain", env=env, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert newest_key(tmp_path / "data").plan is None
