"""The ledger on a fresh, migrated database of each kind, per test: no test
sees another's accounts, keys or holds, whatever the order they run in.
A property test takes ``database_template`` and opens a fresh database
for each example (``database_template.fresh()``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from billing.ledger import Ledger
from schema.database import create_engine
from schema.settings import Settings
from tests.support.databases import DatabaseTemplate, PostgresTemplate, SqliteTemplate
from tests.support.services import require_services


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplate:
    return SqliteTemplate(tmp_path_factory.mktemp("sqlite-ledgers"))


@pytest.fixture(scope="session")
def postgresql_template() -> Iterator[PostgresTemplate]:
    require_services()
    template = PostgresTemplate()
    try:
        yield template
    finally:
        template.close()


# Function-scoped over the session's templates: each is migrated once
# however the tests of both kinds are interleaved.
@pytest.fixture(params=["sqlite", "postgresql"])
def database_template(request: pytest.FixtureRequest) -> DatabaseTemplate:
    return request.getfixturevalue(f"{request.param}_template")


@pytest.fixture
def database_settings(database_template: DatabaseTemplate) -> Iterator[Settings]:
    with database_template.fresh() as settings:
        yield settings


@pytest.fixture
def empty_database_settings(database_template: DatabaseTemplate) -> Iterator[Settings]:
    """A fresh database with no tables, for the migrations' own tests."""
    with database_template.empty() as settings:
        yield settings


@pytest.fixture
async def ledger(database_settings: Settings) -> AsyncIterator[Ledger]:
    engine = create_engine(database_settings)
    yield Ledger(engine)
    await engine.dispose()
