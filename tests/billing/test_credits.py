"""Credits from outside the usage flow, on both databases: top-ups credited
once per payment event, and expiring grants that settlement spends first and
the sweeper takes back."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from billing.balances.memory import MemoryBalances
from billing.consumer import SettlementConsumer
from billing.coupons import CouponBook
from billing.ledger import Ledger
from billing.snapshots import LedgerSnapshots
from scheduler.queues.memory import MemoryUsageQueue
from schema.database import create_engine
from schema.errors import UnknownAccount
from schema.jobs import Price, Usage, UsageEvent
from schema.settings import Settings
from schema.tables import credit_grants, ledger_entries, ledger_transactions
from tests.support.databases import DatabaseTemplate

DAY = 86_400
OUTPUT_ONLY = Price(input_per_mtok=Decimal("0"), output_per_mtok=Decimal("1"))  # one micro-credit per output token


async def account(ledger: Ledger, grant: int = 0) -> tuple[int, int]:
    account_id = await ledger.create_account("t", grant)  # type: ignore[arg-type]
    return account_id, await ledger.create_key(account_id, "t", uuid.uuid4().hex, "gz-t")


async def spend(ledger: Ledger, account_id: int, key_id: int, amount: int, *, hold: int | None = None) -> str:
    """Hold (default: exactly ``amount``) and settle a job that costs ``amount``."""
    job_id = uuid.uuid4().hex
    assert await ledger.hold(job_id, account_id, hold if hold is not None else amount, expires_at=time.time() + 60)
    await ledger.settle(UsageEvent(job_id=job_id, account_id=account_id, key_id=key_id, provider="p", model="m",
                                   usage=Usage(input_tokens=0, output_tokens=amount), price=OUTPUT_ONLY))
    return job_id


async def trial(ledger: Ledger, account_id: int, credits: int, days: int, *, now: float | None = None) -> None:
    code = f"T{uuid.uuid4().hex[:12]}".upper()
    book = CouponBook(ledger)
    await book.create(code, credits, trial_days=days)  # type: ignore[arg-type]
    await book.redeem(code, account_id, now=now)


async def remaining(ledger: Ledger, account_id: int) -> list[int]:
    statement = (select(credit_grants.c.remaining).where(credit_grants.c.account_id == account_id)
                 .order_by(credit_grants.c.expires_at))
    async with ledger.engine.connect() as connection:
        return list((await connection.execute(statement)).scalars())


async def test_a_top_up_credits_once_per_reference(ledger: Ledger) -> None:
    account_id, _ = await account(ledger, 100)
    reference = f"evt_{uuid.uuid4().hex}"
    results = await asyncio.gather(*(ledger.top_up(reference, account_id, 500) for _ in range(6)))  # type: ignore[arg-type]
    assert sorted(results) == [False] * 5 + [True]
    assert (await ledger.balance(account_id)).available == 600
    assert await ledger.top_up(f"evt_{uuid.uuid4().hex}", account_id, 1)  # type: ignore[arg-type]
    assert (await ledger.balance(account_id)).available == 601
    assert await ledger.reconcile() == []


async def test_a_top_up_to_an_unknown_or_system_account_is_refused(ledger: Ledger) -> None:
    with pytest.raises(UnknownAccount):
        await ledger.top_up(f"evt_{uuid.uuid4().hex}", 10**9, 100)  # type: ignore[arg-type]
    async with ledger.engine.connect() as connection:
        revenue = await ledger.system_account(connection, "system:revenue")
    with pytest.raises(UnknownAccount):
        await ledger.top_up(f"evt_{uuid.uuid4().hex}", revenue, 100)  # type: ignore[arg-type]
    account_id, _ = await account(ledger)
    with pytest.raises(ValueError):
        await ledger.top_up(f"evt_{uuid.uuid4().hex}", account_id, 0)  # type: ignore[arg-type]
    assert (await ledger.balance(account_id)).available == 0
    assert await ledger.reconcile() == []


async def test_settlement_spends_the_soonest_expiring_credit_first(ledger: Ledger) -> None:
    account_id, key_id = await account(ledger, 1000)
    await trial(ledger, account_id, 50, days=2)
    await trial(ledger, account_id, 100, days=1)
    await spend(ledger, account_id, key_id, 120)
    assert await remaining(ledger, account_id) == [0, 30]
    await spend(ledger, account_id, key_id, 0)
    assert await remaining(ledger, account_id) == [0, 30]
    await spend(ledger, account_id, key_id, 45)
    assert await remaining(ledger, account_id) == [0, 0], "never below zero"
    assert (await ledger.balance(account_id)).available == 1000 + 150 - 165
    assert await ledger.expire_grants(time.time() + 3 * DAY) == 0, "nothing left to expire"
    assert (await ledger.balance(account_id)).available == 985
    assert await ledger.reconcile() == []


async def test_expiry_takes_back_what_is_left_once(ledger: Ledger) -> None:
    account_id, key_id = await account(ledger, 1000)
    await trial(ledger, account_id, 300, days=1)
    await spend(ledger, account_id, key_id, 100)
    assert await ledger.expire_grants(time.time() + DAY - 60) == 0, "not yet"
    expired = await asyncio.gather(*(ledger.expire_grants(time.time() + DAY + 60) for _ in range(4)))
    assert sum(expired) == 1
    assert await remaining(ledger, account_id) == [0]
    assert (await ledger.balance(account_id)).available == 1000
    assert await ledger.reconcile() == []


async def test_an_expired_grant_is_not_spent_and_expires_whole(ledger: Ledger) -> None:
    account_id, key_id = await account(ledger, 1000)
    await trial(ledger, account_id, 200, days=1, now=time.time() - 2 * DAY)  # expired yesterday, not yet swept
    await spend(ledger, account_id, key_id, 50)
    assert await remaining(ledger, account_id) == [200]
    assert await ledger.expire_grants() >= 1
    assert (await ledger.balance(account_id)).available == 1000 + 200 - 50 - 200
    assert await ledger.reconcile() == []


async def test_expiry_leaves_credit_held_by_a_running_job(ledger: Ledger) -> None:
    account_id, key_id = await account(ledger)
    await trial(ledger, account_id, 100, days=1)
    job_id = uuid.uuid4().hex
    assert await ledger.hold(job_id, account_id, 80, expires_at=time.time() + 60)
    assert await ledger.expire_grants(time.time() + 2 * DAY) == 1
    balance = await ledger.balance(account_id)
    assert (balance.available, balance.held) == (0, 80), "only the 20 available expired"
    await ledger.settle(UsageEvent(job_id=job_id, account_id=account_id, key_id=key_id, provider="p", model="m",
                                   usage=Usage(input_tokens=0, output_tokens=10), price=OUTPUT_ONLY))
    balance = await ledger.balance(account_id)
    assert (balance.available, balance.held) == (70, 0)
    assert await ledger.reconcile() == []


operations = st.lists(
    st.tuples(st.sampled_from(["spend", "top_up", "trial", "expire", "replay"]), st.integers(0, 400),
              st.integers(1, 3)),
    max_size=20,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations)
def test_any_mix_of_top_ups_trials_spending_and_expiry_reconciles(
    database_template: DatabaseTemplate, steps: list[tuple[str, int, int]]
) -> None:
    async def run(database: Settings) -> None:
        engine = create_engine(database)
        ledger = Ledger(engine)
        try:
            account_id, key_id = await account(ledger, 500)
            clock, last_reference, credited = time.time(), None, 500
            for operation, amount, days in steps:
                if operation == "spend":
                    if (await ledger.balance(account_id)).available >= amount:
                        await spend(ledger, account_id, key_id, amount)
                        credited -= amount
                elif operation == "top_up" and amount:
                    last_reference = f"evt_{uuid.uuid4().hex}"
                    credited += amount * await ledger.top_up(last_reference, account_id, amount)  # type: ignore[arg-type]
                elif operation == "replay" and last_reference is not None:
                    assert not await ledger.top_up(last_reference, account_id, amount or 1)  # type: ignore[arg-type]
                elif operation == "trial" and amount:
                    await trial(ledger, account_id, amount, days, now=clock)
                    credited += amount
                elif operation == "expire":
                    clock += days * DAY
                    await ledger.expire_grants(clock)
            balance = await ledger.balance(account_id)
            left = sum(await remaining(ledger, account_id))
            assert balance.available >= 0
            assert balance.available == credited - (await _expired(ledger, account_id))
            assert left <= balance.available, "unspent trial credit is always still in the account"
            assert await ledger.reconcile() == []
        finally:
            await engine.dispose()

    with database_template.fresh() as database:  # each example its own: no example sees another's rows
        asyncio.run(run(database))


async def _expired(ledger: Ledger, account_id: int) -> int:
    """What expiry took back from the account, from the ledger itself."""
    statement = (
        select(func.coalesce(func.sum(ledger_entries.c.amount), 0))
        .join(ledger_transactions, ledger_transactions.c.id == ledger_entries.c.transaction_id)
        .where(ledger_transactions.c.kind == "expire", ledger_entries.c.account_id == account_id)
    )
    async with ledger.engine.connect() as connection:
        return -int((await connection.execute(statement)).scalar_one())


async def test_the_billing_sweeper_expires_grants(ledger: Ledger) -> None:
    account_id, _ = await account(ledger, 10)
    await trial(ledger, account_id, 90, days=1, now=time.time() - 2 * DAY)
    balances = MemoryBalances(LedgerSnapshots(ledger.engine))
    consumer = asyncio.create_task(SettlementConsumer(ledger, balances, MemoryUsageQueue(), sweep_interval=0.05).run())
    try:
        for _ in range(200):
            if (await ledger.balance(account_id)).available == 10:
                break
            await asyncio.sleep(0.05)
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
    assert (await ledger.balance(account_id)).available == 10
    assert await remaining(ledger, account_id) == [0]
