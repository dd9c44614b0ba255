"""How billing's hot statements are built: once per dialect, with SQL text
that does not depend on how many rows or ids a batch has.

A statement built per call, or whose text grows with its batch (a
multi-row ``insert(...).values([...])``, an ``IN`` list on PostgreSQL), is
compiled again by SQLAlchemy and prepared again by asyncpg for every new
size. Built once here, each is compiled once per process, prepared once per
PostgreSQL connection, and run with a list of parameter sets (executemany;
an ``INSERT … RETURNING`` goes through SQLAlchemy's insertmanyvalues) or
with a list bound as one parameter (``among``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Table, any_, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.schema import Column

T = TypeVar("T")
# The dialects' own INSERT, the one with ``on_conflict_do_…``.
DialectInsert = postgresql.Insert | sqlite.Insert


def per_dialect(build: Callable[[str], T]) -> Callable[[AsyncConnection], T]:
    """``build(dialect_name)`` runs once per dialect; the decorated function
    takes the connection the statement will run on."""
    built = functools.cache(build)

    @functools.wraps(build)
    def statement(connection: AsyncConnection) -> T:
        return built(connection.dialect.name)

    return statement


def among(column: Column[Any], name: str, dialect: str) -> ColumnElement[bool]:
    """``column`` is one of the list bound as ``name``: ``= ANY(:name)`` on
    PostgreSQL (one text, prepared once, whatever the list's length), an
    expanding ``IN`` on SQLite (which prepares statements locally, cheaply)."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


def insert_for(dialect: str) -> Callable[[Table], DialectInsert]:
    """The dialect's ``insert`` (the one with ``on_conflict_do_…``)."""
    if dialect == "postgresql":
        return postgresql.insert
    return sqlite.insert


@functools.cache
def ignoring_duplicates(dialect: str, table: Table, columns: tuple[str, ...]) -> DialectInsert:
    """``INSERT … ON CONFLICT (columns) DO NOTHING`` into ``table``, built once per dialect."""
    return insert_for(dialect)(table).on_conflict_do_nothing(index_elements=list(columns))


def insert_ignoring_duplicates(connection: AsyncConnection, table: Table, columns: list[str]) -> DialectInsert:
    return ignoring_duplicates(connection.dialect.name, table, tuple(columns))
