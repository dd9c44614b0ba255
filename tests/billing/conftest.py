"""The ledger on a fresh database of each kind, per test module."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from billing.ledger import Ledger
from schema.database import create_engine, migrate
from schema.settings import Settings
from tests.support.services import POSTGRES_DSN, _admin, require_services


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_settings(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield Settings(data_dir=tmp_path_factory.mktemp("ledger"), database_url=None)
        return
    require_services()
    name = f"gatewayz_ledger_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield Settings(database_url=f"{base}/{name}")
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def ledger(database_settings: Settings) -> AsyncIterator[Ledger]:
    engine = create_engine(database_settings)
    await migrate(engine)
    yield Ledger(engine)
    await engine.dispose()
