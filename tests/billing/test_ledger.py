"""The ledger on both databases: holds, exactly-once settlement, the
sweeper, reconciliation, and the migration from the single-entry ledger."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger import Ledger
from schema.database import create_engine, migrate
from schema.errors import InsufficientCredits
from schema.jobs import Price, Usage, UsageEvent
from schema.settings import Settings
from tests.support.databases import DatabaseTemplate

PRICE = Price(input_per_mtok=Decimal("1"), output_per_mtok=Decimal("2"))


def usage_event(job_id: str, account_id: int, key_id: int, input_tokens: int, output_tokens: int) -> UsageEvent:
    return UsageEvent(job_id=job_id, account_id=account_id, key_id=key_id, provider="p", model="m",
                      usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens), price=PRICE)


async def account(ledger: Ledger, grant: int) -> tuple[int, int]:
    account_id = await ledger.create_account("t", grant)  # type: ignore[arg-type]
    return account_id, await ledger.create_key(account_id, "t", uuid.uuid4().hex, "gz-t")


async def test_hold_then_settle_charges_actual_and_releases_the_rest(ledger: Ledger) -> None:
    account_id, key_id = await account(ledger, 1000)
    assert (await ledger.hold("job_a", account_id, 300, expires_at=time.time() + 60)).held == 300
    assert (await ledger.balance(account_id)).available == 700
    assert await ledger.settle(usage_event("job_a", account_id, key_id, 10, 20))  # 10 + 40 = 50
    balance = await ledger.balance(account_id)
    assert (balance.available, balance.held) == (950, 0)
    assert await ledger.reconcile() == []


async def test_a_duplicate_usage_event_changes_nothing(ledger: Ledger) -> None:
    account_id, key_id = await account(ledger, 1000)
    await ledger.hold("job_b", account_id, 300, expires_at=time.time() + 60)
    event = usage_event("job_b", account_id, key_id, 10, 20)
    results = await asyncio.gather(*(ledger.settle(event) for _ in range(5)), return_exceptions=True)
    assert sorted(map(str, results)) == ["False"] * 4 + ["True"], results
    assert (await ledger.balance(account_id)).available == 950
    assert await ledger.reconcile() == []


async def test_one_batch_settles_jobs_of_several_accounts_each_once(ledger: Ledger) -> None:
    """A batch as the billing consumer takes it: several accounts, a job
    with a hold in the ledger, jobs without one, a job settled before, and
    the same job twice."""
    (first, first_key), (second, second_key), (third, third_key) = [await account(ledger, 1000) for _ in range(3)]
    await ledger.hold("held", first, 300, expires_at=time.time() + 60)
    assert await ledger.settle(usage_event("before", third, third_key, 1, 2))  # 5
    outcome = await ledger.settle_many([
        usage_event("held", first, first_key, 10, 20),  # 50
        usage_event("plain", first, first_key, 1, 1),  # 3
        usage_event("other", second, second_key, 100, 0),  # 100
        usage_event("other", second, second_key, 100, 0),
        usage_event("before", third, third_key, 1, 2),
        usage_event("late", third, third_key, 0, 10),  # 20
    ])
    assert sorted(outcome.settled) == ["held", "late", "other", "plain"]
    assert outcome.duplicates == ["before"]
    balances = [await ledger.balance(account_id) for account_id in (first, second, third)]
    assert [(balance.available, balance.held) for balance in balances] == [(947, 0), (900, 0), (975, 0)]
    assert await ledger.reconcile() == []


async def test_a_hold_that_does_not_fit_reserves_nothing(ledger: Ledger) -> None:
    account_id, _ = await account(ledger, 100)
    with pytest.raises(InsufficientCredits, match="up to 0.000101 credits .* has 0.000100 available"):
        await ledger.hold("job_c", account_id, 101, expires_at=time.time() + 60)
    assert (await ledger.hold("job_d", account_id, 100, expires_at=time.time() + 60)).available == 0
    with pytest.raises(InsufficientCredits):
        await ledger.hold("job_e", account_id, 1, expires_at=time.time() + 60)
    balance = await ledger.balance(account_id)
    assert (balance.available, balance.held) == (0, 100)


async def test_failed_job_reports_zero_usage_and_pays_nothing(ledger: Ledger) -> None:
    account_id, key_id = await account(ledger, 100)
    await ledger.hold("job_f", account_id, 80, expires_at=time.time() + 60)
    assert await ledger.settle(usage_event("job_f", account_id, key_id, 0, 0))
    assert (await ledger.balance(account_id)).available == 100


async def test_sweeper_releases_expired_holds_and_late_settlement_still_charges_once(ledger: Ledger) -> None:
    account_id, key_id = await account(ledger, 1000)
    await ledger.hold("job_g", account_id, 300, expires_at=time.time() - 1)
    await ledger.hold("job_h", account_id, 200, expires_at=time.time() + 3600)
    assert await ledger.release_expired() == 1
    balance = await ledger.balance(account_id)
    assert (balance.available, balance.held) == (800, 200)
    assert await ledger.release("job_g") is False, "already released"
    assert await ledger.settle(usage_event("job_g", account_id, key_id, 10, 20))  # the worker was late
    assert (await ledger.balance(account_id)).available == 750
    assert await ledger.reconcile() == []


async def test_reconcile_finds_a_tampered_balance(ledger: Ledger) -> None:
    account_id, _ = await account(ledger, 1000)
    async with ledger.engine.begin() as connection:
        await connection.execute(text("UPDATE accounts SET available = available + 1 WHERE id = :id"),
                                 {"id": account_id})
    found = await ledger.reconcile()
    assert [(d.account_id, d.what, d.recorded - d.recomputed) for d in found] == [(account_id, "available", 1)]
    async with ledger.engine.begin() as connection:
        await connection.execute(text("UPDATE accounts SET available = available - 1 WHERE id = :id"),
                                 {"id": account_id})


operations = st.lists(
    st.tuples(st.sampled_from(["hold", "settle", "release", "sweep", "duplicate"]), st.integers(0, 5),
              st.integers(0, 400), st.integers(0, 100), st.integers(0, 100)),
    max_size=25,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations)
def test_any_sequence_of_operations_reconciles(database_template: DatabaseTemplate,
                                               steps: list[tuple[str, int, int, int, int]]) -> None:
    async def run(database: Settings) -> None:
        engine = create_engine(database)
        ledger = Ledger(engine)
        try:
            account_id, key_id = await account(ledger, 10_000)
            prefix, held = uuid.uuid4().hex[:8], set()
            for operation, job, amount, input_tokens, output_tokens in steps:
                job_id = f"{prefix}-{job}"
                # Job ids are unique: one hold each, before the job can report (a job
                # reporting with no hold is a hold the ledger never had: it is closed then).
                if operation == "hold" and job_id not in held:
                    held.add(job_id)
                    with contextlib.suppress(InsufficientCredits):
                        await ledger.hold(job_id, account_id, amount, key_id=key_id,
                                          expires_at=time.time() + (60 if amount % 2 else -1))
                elif operation in ("settle", "duplicate"):
                    held.add(job_id)
                    await ledger.settle(usage_event(job_id, account_id, key_id, input_tokens, output_tokens))
                elif operation == "release":
                    await ledger.release(job_id)
                else:
                    await ledger.release_expired()
            assert await ledger.reconcile() == []
            balance = await ledger.balance(account_id)
            assert balance.held >= 0
        finally:
            await engine.dispose()

    with database_template.fresh() as database:  # each example its own: no example sees another's rows
        asyncio.run(run(database))


async def test_upgrade_from_the_single_entry_ledger_reconciles(tmp_path: Path) -> None:
    engine: AsyncEngine = create_engine(Settings(data_dir=tmp_path, database_url=None))
    try:
        from alembic import command
        from alembic.config import Config

        def to_0001(connection) -> None:  # type: ignore[no-untyped-def]
            config = Config()
            config.set_main_option("script_location", "schema:migrations")
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")

        async with engine.begin() as connection:
            await connection.run_sync(to_0001)
            await connection.execute(text("INSERT INTO accounts (id, name, balance) VALUES (1, 'old', 4999980)"))
            await connection.execute(text("INSERT INTO api_keys (id, account_id, name, key_hash, prefix) "
                                          "VALUES (1, 1, 'k', 'h', 'gz-')"))
            await connection.execute(text("INSERT INTO ledger_entries (account_id, kind, amount, reference) VALUES "
                                          "(1, 'grant', 5000000, 'initial credits'), (1, 'charge', -20, 'job_old')"))
        await migrate(engine)
        ledger = Ledger(engine)
        assert await ledger.reconcile() == []
        balance = await ledger.balance(1)
        assert (balance.available, balance.held) == (4999980, 0)
    finally:
        await engine.dispose()
