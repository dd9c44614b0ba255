"""Opening the database and applying migrations, for either backend."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from schema.settings import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.sqlalchemy_url
    if not url.startswith("sqlite"):
        # A fixed pool: overflow connections were opened and closed per checkout
        # under load, and a pre-ping cost a round trip (three, for asyncpg) each
        # time. A connection PostgreSQL dropped fails its one statement and is
        # replaced; nothing on the request path uses the database. asyncpg keeps
        # its statements prepared per connection: room for every batch size of
        # billing's INSERT … RETURNING (insertmanyvalues writes one text per size).
        return create_async_engine(url, pool_size=16, max_overflow=0, pool_pre_ping=False, pool_timeout=30,
                                   pool_recycle=3600, connect_args={"prepared_statement_cache_size": 500})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # One connection: SQLite has one writer anyway, and queueing in the pool
    # (an asyncio wait) beats the busy handler's sleep-and-retry inside SQLite.
    engine = create_async_engine(url, connect_args={"timeout": 30}, pool_size=1, max_overflow=0, pool_timeout=60)

    @event.listens_for(engine.sync_engine, "connect")
    def _wal(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # WAL lets `gatewayz keys create` write while `serve` reads and writes.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", "schema:migrations")
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)
