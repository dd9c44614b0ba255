"""Revision 0004 (key limits) on both databases: it upgrades a 0003 database
with open holds, and goes down and up again while no adjustment uses it.
Revision 0008 (files) goes down and up."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from billing.adjustments import adjust_credits
from billing.ledger import Ledger
from scheduler.files import FileStore
from schema.database import create_engine
from schema.jobs import Price, Usage, UsageEvent
from schema.settings import Settings


def _to(revision: str, *, down: bool = False):  # type: ignore[no-untyped-def]
    def run(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", "schema:migrations")
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    return run


def _columns(connection: Connection, table: str) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns(table)}


async def test_0004_upgrades_open_holds_and_goes_down_and_up(empty_database_settings: Settings) -> None:
    engine = create_engine(empty_database_settings)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_to("0003"))
            await connection.execute(text("INSERT INTO accounts (name, kind, available, held) "
                                          "VALUES ('old', 'user', 700, 300)"))
            account_id = (await connection.execute(text("SELECT max(id) FROM accounts"))).scalar_one()
            await connection.execute(text("INSERT INTO api_keys (account_id, name, key_hash, prefix) "
                                          "VALUES (:a, 'k', 'old-hash', 'gz-')"), {"a": account_id})
            key_id = (await connection.execute(text("SELECT max(id) FROM api_keys"))).scalar_one()
            grants = (await connection.execute(
                text("SELECT id FROM accounts WHERE name = 'system:grants'"))).scalar_one()
            for kind, reference, entries in (
                ("grant", "old-grant", [(account_id, "available", 1000), (grants, "available", -1000)]),
                ("hold", "job_old", [(account_id, "available", -300), (account_id, "held", 300)]),
            ):
                transaction = (await connection.execute(text(
                    "INSERT INTO ledger_transactions (kind, reference) VALUES (:k, :r) RETURNING id"),
                    {"k": kind, "r": reference})).scalar_one()
                for account, bucket, amount in entries:
                    await connection.execute(
                        text("INSERT INTO ledger_entries (transaction_id, account_id, bucket, amount) "
                             "VALUES (:t, :a, :b, :v)"),
                        {"t": transaction, "a": account, "b": bucket, "v": amount})
            await connection.execute(text("UPDATE accounts SET available = available - 1000 WHERE id = :g"),
                                     {"g": grants})
            await connection.execute(text("INSERT INTO holds (job_id, account_id, amount, expires_at, closed) "
                                          "VALUES ('job_old', :a, 300, :e, false)"),
                                     {"a": account_id, "e": time.time() + 60})
            await connection.run_sync(_to("0004"))
            limit_columns = {"daily_limit", "monthly_limit", "total_limit", "expires_at"}
            assert limit_columns <= await connection.run_sync(_columns, "api_keys")
            # Today's ledger writes the columns of the revisions after 0004 too.
            await connection.run_sync(_to("head"))

        ledger = Ledger(engine)
        assert await ledger.reconcile() == []
        # The hold from before the upgrade settles as any other.
        await ledger.settle(UsageEvent(job_id="job_old", account_id=account_id, key_id=key_id, provider="p", model="m",
                                       usage=Usage(output_tokens=100), price=Price(output_per_mtok=1)))
        assert (await ledger.balance(account_id)).available == 900
        assert await ledger.reconcile() == []

        async with engine.begin() as connection:
            await connection.run_sync(_to("0003", down=True))
            assert "key_spend" not in await connection.run_sync(lambda c: inspect(c).get_table_names())
            assert "daily_limit" not in await connection.run_sync(_columns, "api_keys")
            await connection.run_sync(_to("0004"))
            await connection.run_sync(_to("head"))
        assert (await ledger.balance(account_id)).available == 900

        await adjust_credits(ledger, account_id, 5, "goodwill")
        with pytest.raises(NotImplementedError, match="adjustments are in the ledger"):
            async with engine.begin() as connection:
                await connection.run_sync(_to("0003", down=True))
        assert await ledger.reconcile() == []
    finally:
        await engine.dispose()


async def _content(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_0008_adds_the_file_tables_and_goes_down_and_up(empty_database_settings: Settings) -> None:
    engine = create_engine(empty_database_settings)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_to("0008"))
            assert {"files", "file_chunks"} <= await connection.run_sync(_tables)
            await connection.run_sync(_to("0007", down=True))
            assert not {"files", "file_chunks"} & await connection.run_sync(_tables)
            await connection.run_sync(_to("head"))
        account_id = await Ledger(engine).create_account("files", 0)
        stored = await FileStore(engine).save(account_id=account_id, purpose="batch", filename="a",
                                              content=_content(b"{}\n"), max_bytes=10)
        assert [piece async for piece in FileStore(engine).read(stored.id)] == [b"{}\n"]
    finally:
        await engine.dispose()
