"""A fresh database for every test (and every hypothesis example) that
touches the ledger, on either backend, so no test ever sees another's rows.

Each backend is migrated once per session into a template. SQLite copies the
template's files. PostgreSQL clones it (``CREATE DATABASE … TEMPLATE``),
and once a test is done puts the clone back as the template left it (every
table's rows, every sequence's position) for the next test: cloning and
dropping write whole databases to disk, a few hundred milliseconds each on
a busy machine, where putting back a few rows takes a few.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncpg

from schema.database import create_engine, migrate
from schema.settings import Settings
from tests.support.services import POSTGRES_DSN, _admin

_SERVER = POSTGRES_DSN.rsplit("/", 1)[0]


class DatabaseTemplate(Protocol):
    """Where a test's databases come from, on one backend."""

    def fresh(self) -> AbstractContextManager[Settings]: ...

    def empty(self) -> AbstractContextManager[Settings]: ...


async def _migrate(settings: Settings) -> None:
    engine = create_engine(settings)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()  # a PostgreSQL template must have no connection left


class SqliteTemplate:
    """A migrated SQLite data directory, copied whole for each database."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._template = root / "template"
        asyncio.run(_migrate(Settings(data_dir=self._template, database_url=None)))

    @contextmanager
    def fresh(self) -> Iterator[Settings]:
        """Settings for a new database at the newest revision, deleted after."""
        directory = Path(tempfile.mkdtemp(prefix="ledger-", dir=self._root))
        shutil.copytree(self._template, directory, dirs_exist_ok=True)
        try:
            yield Settings(data_dir=directory, database_url=None)
        finally:
            shutil.rmtree(directory)

    @contextmanager
    def empty(self) -> Iterator[Settings]:
        """Settings for a new database with no tables (for migration tests)."""
        directory = Path(tempfile.mkdtemp(prefix="empty-", dir=self._root))
        try:
            yield Settings(data_dir=directory, database_url=None)
        finally:
            shutil.rmtree(directory)


class PostgresTemplate:
    """A migrated PostgreSQL database, and its clones: one per test at a time."""

    def __init__(self) -> None:
        self._template = f"gatewayz_template_{uuid.uuid4().hex[:10]}"
        self._idle: list[str] = []  # clones holding exactly what the template holds
        asyncio.run(_admin(f'CREATE DATABASE "{self._template}"'))
        try:
            asyncio.run(_migrate(_settings(self._template)))
            self._contents = asyncio.run(_Contents.read(self._template))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for name in [*self._idle, self._template]:
            _drop(name)
        self._idle.clear()

    @contextmanager
    def fresh(self) -> Iterator[Settings]:
        """Settings for a database holding what the template holds (a clone,
        new or put back), for the caller alone until it is done with it."""
        if self._idle:
            name = self._idle.pop()
        else:
            name = _new_name()
            asyncio.run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"'))
        try:
            yield _settings(name)
        finally:
            restored = False
            try:
                restored = asyncio.run(self._contents.restore(name))
            finally:
                if restored:
                    self._idle.append(name)
                else:
                    _drop(name)

    @contextmanager
    def empty(self) -> Iterator[Settings]:
        """Settings for a new database with no tables (for migration tests)."""
        name = _new_name()
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
        try:
            yield _settings(name)
        finally:
            _drop(name)


@dataclass(frozen=True, slots=True)
class _Contents:
    """What a PostgreSQL database holds: its schema (as one comparable
    text), every table's rows and every sequence's next value."""

    schema: str
    rows: dict[str, list[asyncpg.Record]]
    sequences: dict[str, tuple[int, bool]]  # setval's (value, is_called)

    @classmethod
    async def read(cls, name: str) -> _Contents:
        connection = await asyncpg.connect(f"{_SERVER}/{name}")
        try:
            tables = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            sequences = await connection.fetch(
                "SELECT sequencename, coalesce(last_value, start_value), last_value IS NOT NULL"
                " FROM pg_sequences WHERE schemaname = 'public'"
            )
            return cls(
                schema=await _schema(connection),
                rows={table: await connection.fetch(f'SELECT * FROM "{table}"') for (table,) in tables},
                sequences={sequence: (value, called) for sequence, value, called in sequences},
            )
        finally:
            await connection.close()

    async def restore(self, name: str) -> bool:
        """Make database ``name`` hold this again; False, changing nothing,
        if its schema is not this one any more (a test changed it)."""
        # A connection a test left open would hold locks, or write afterwards.
        await _admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        connection = await asyncpg.connect(f"{_SERVER}/{name}")
        try:
            if await _schema(connection) != self.schema:
                return False
            async with connection.transaction():
                # No foreign-key triggers: the tables are emptied in any order.
                await connection.execute("SET LOCAL session_replication_role = replica")
                for table, rows in self.rows.items():
                    await connection.execute(f'DELETE FROM "{table}"')
                    if rows:
                        await connection.copy_records_to_table(table, records=rows, columns=list(rows[0].keys()))
                for sequence, (value, called) in self.sequences.items():
                    await connection.execute("SELECT setval($1, $2, $3)", sequence, value, called)
            return True
        finally:
            await connection.close()


async def _schema(connection: asyncpg.Connection) -> str:
    return await connection.fetchval("""
        SELECT coalesce(string_agg(part, E'\\n' ORDER BY part), '') FROM (
            SELECT concat_ws(' ', table_name, column_name, data_type, is_nullable, column_default) AS part
            FROM information_schema.columns WHERE table_schema = 'public'
            UNION ALL
            SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'
            UNION ALL
            SELECT concat_ws(' ', conrelid::regclass, pg_get_constraintdef(oid)) FROM pg_constraint
            WHERE connamespace = 'public'::regnamespace
        ) AS parts
    """)


def _new_name() -> str:
    return f"gatewayz_test_{uuid.uuid4().hex[:10]}"


def _settings(name: str) -> Settings:
    return Settings(database_url=f"{_SERVER.replace('postgresql://', 'postgresql+asyncpg://')}/{name}")


def _drop(name: str) -> None:
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
