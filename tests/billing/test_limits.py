"""Per-key spending limits and expiry on both databases: holds bounded by
every limit of the key, settlement and release moving exactly the periods a
hold was counted in, a first limit starting from what the key already spent,
and the counters reconciling."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from billing.keys import change_key, key_record
from billing.ledger import Ledger
from billing.limits import KeyLimits
from schema.database import create_engine
from schema.errors import InsufficientCredits, KeyExpired, KeyLimitExceeded, KeyRevoked
from schema.jobs import Price, Usage, UsageEvent
from schema.settings import Settings
from schema.tables import key_spend
from tests.support.databases import DatabaseTemplate

OUTPUT_ONLY = Price(input_per_mtok=Decimal("0"), output_per_mtok=Decimal("1"))  # one micro-credit per output token
DAY = 86_400
NOON = datetime(2030, 3, 31, 12, tzinfo=UTC).timestamp()  # the last day of a month
# Holds, settlements and spend are at NOON unless a test says otherwise: on
# the real clock, a test running across 00:00 UTC would count in two days.
# (A test whose key gets its first limit counts usage rows, which carry the
# database's clock: it runs at the moment it started by that clock.)


async def key(ledger: Ledger, grant: int = 10_000, **limits: int | None) -> tuple[int, int]:
    account_id = await ledger.create_account("t", grant)  # type: ignore[arg-type]
    key_id = await ledger.create_key(account_id, "t", uuid.uuid4().hex, "gz-t", limits=KeyLimits(**limits))
    return account_id, key_id


async def hold(ledger: Ledger, account_id: int, key_id: int, amount: int, *, now: float = NOON,
               expires_in: float = 60) -> str:
    job_id = uuid.uuid4().hex
    await ledger.hold(job_id, account_id, amount, key_id=key_id, now=now, expires_at=time.time() + expires_in)  # type: ignore[arg-type]
    return job_id


async def settle(ledger: Ledger, job_id: str, account_id: int, key_id: int, cost: int, *,
                 now: float = NOON) -> None:
    await ledger.settle(UsageEvent(job_id=job_id, account_id=account_id, key_id=key_id, provider="p", model="m",
                                   usage=Usage(input_tokens=0, output_tokens=cost), price=OUTPUT_ONLY), now=now)


async def spent(ledger: Ledger, key_id: int, now: float = NOON) -> dict[str, int]:
    record = await key_record(ledger.engine, key_id, now=now)
    assert record.spend is not None
    return record.spend


async def database_now(ledger: Ledger) -> float:
    """The database's clock, which stamps usage rows (``created_at``)."""
    async with ledger.engine.connect() as connection:
        moment = (await connection.execute(select(func.current_timestamp()))).scalar_one()
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()  # SQLite's is naive UTC


async def counters(ledger: Ledger, key_id: int) -> dict[str, int]:
    async with ledger.engine.connect() as connection:
        rows = await connection.execute(
            select(key_spend.c.period, key_spend.c.amount).where(key_spend.c.key_id == key_id))
        return {period: int(amount) for period, amount in rows}


async def test_a_key_without_limits_counts_nothing(ledger: Ledger) -> None:
    account_id, key_id = await key(ledger)
    job_id = await hold(ledger, account_id, key_id, 300)
    await settle(ledger, job_id, account_id, key_id, 120)
    assert (await ledger.balance(account_id)).available == 10_000 - 120
    assert await counters(ledger, key_id) == {}
    assert (await key_record(ledger.engine, key_id)).spend is None
    assert await ledger.reconcile() == []


@pytest.mark.parametrize("kind", ["daily", "monthly", "total"])
async def test_holds_fit_the_limit_and_settlement_counts_the_actual_cost(ledger: Ledger, kind: str) -> None:
    account_id, key_id = await key(ledger, **{kind: 100})
    first = await hold(ledger, account_id, key_id, 60)
    assert await spent(ledger, key_id) == {"day": 60, "month": 60, "total": 60}
    with pytest.raises(KeyLimitExceeded, match=rf"up to 0.000050 credits and this key's {kind} limit of 0.000100 "
                                               r"credits has 0.000040 left"):
        await hold(ledger, account_id, key_id, 50)
    balance = await ledger.balance(account_id)
    assert (balance.available, balance.held) == (10_000 - 60, 60), "a refused hold reserves nothing"
    assert await spent(ledger, key_id) == {"day": 60, "month": 60, "total": 60}

    await settle(ledger, first, account_id, key_id, 10)
    assert await spent(ledger, key_id) == {"day": 10, "month": 10, "total": 10}
    second = await hold(ledger, account_id, key_id, 90)
    with pytest.raises(KeyLimitExceeded, match="has 0.000000 left"):
        await hold(ledger, account_id, key_id, 1)
    await settle(ledger, second, account_id, key_id, 90)
    assert await spent(ledger, key_id) == {"day": 100, "month": 100, "total": 100}
    assert (await ledger.balance(account_id)).available == 10_000 - 100
    assert await ledger.reconcile() == []


async def test_a_hold_larger_than_a_limit_never_fits(ledger: Ledger) -> None:
    account_id, key_id = await key(ledger, total=100)
    with pytest.raises(KeyLimitExceeded, match="total limit of 0.000100 credits has 0.000100 left:"):
        await hold(ledger, account_id, key_id, 101)
    await hold(ledger, account_id, key_id, 100)
    assert await ledger.reconcile() == []


async def test_a_zero_limit_lets_only_free_requests_through(ledger: Ledger) -> None:
    account_id, key_id = await key(ledger, daily=0)
    with pytest.raises(KeyLimitExceeded):
        await hold(ledger, account_id, key_id, 1)
    await settle(ledger, await hold(ledger, account_id, key_id, 0), account_id, key_id, 0)
    assert await spent(ledger, key_id) == {"day": 0, "month": 0, "total": 0}


async def test_the_account_is_checked_too(ledger: Ledger) -> None:
    account_id, key_id = await key(ledger, grant=50, total=1000)
    with pytest.raises(InsufficientCredits):
        await hold(ledger, account_id, key_id, 60)
    assert await spent(ledger, key_id) == {"day": 0, "month": 0, "total": 0}, "nothing counted for a refused hold"


async def test_release_and_the_sweeper_give_the_hold_back(ledger: Ledger) -> None:
    account_id, key_id = await key(ledger, daily=100)
    released = await hold(ledger, account_id, key_id, 70)
    assert await ledger.release(released)
    assert await spent(ledger, key_id) == {"day": 0, "month": 0, "total": 0}
    assert not await ledger.release(released)
    assert await spent(ledger, key_id) == {"day": 0, "month": 0, "total": 0}, "released once"

    late = await hold(ledger, account_id, key_id, 80, expires_in=-1)
    assert await ledger.release_expired() == 1
    assert await spent(ledger, key_id) == {"day": 0, "month": 0, "total": 0}
    await settle(ledger, late, account_id, key_id, 30)  # the worker reported after the sweep
    await settle(ledger, late, account_id, key_id, 30)  # and its event was delivered twice
    assert await spent(ledger, key_id) == {"day": 30, "month": 30, "total": 30}
    assert (await ledger.balance(account_id)).available == 10_000 - 30
    assert await ledger.reconcile() == []


async def test_a_usage_event_without_a_hold_counts_in_the_periods_it_settles_in(ledger: Ledger) -> None:
    account_id, key_id = await key(ledger, daily=100, monthly=150, total=1000)
    await settle(ledger, uuid.uuid4().hex, account_id, key_id, 40, now=NOON)  # its hold row was never written
    assert await spent(ledger, key_id, NOON) == {"day": 40, "month": 40, "total": 40}
    assert await spent(ledger, key_id, NOON + DAY) == {"day": 0, "month": 0, "total": 40}, "April starts fresh"
    assert (await ledger.balance(account_id)).available == 10_000 - 40
    assert await ledger.reconcile() == []


async def test_a_hold_released_before_the_first_limit_counts_when_it_settles(ledger: Ledger) -> None:
    account_id, key_id = await key(ledger)
    late = await hold(ledger, account_id, key_id, 70, expires_in=-1)
    assert await ledger.release_expired() == 1
    await change_key(ledger.engine, key_id, {"total_limit": 1000}, now=NOON)
    await settle(ledger, late, account_id, key_id, 30, now=NOON)
    assert await spent(ledger, key_id, NOON) == {"day": 30, "month": 30, "total": 30}
    with pytest.raises(KeyLimitExceeded, match="has 0.000970 left"):
        await hold(ledger, account_id, key_id, 971, now=NOON)
    assert (await ledger.balance(account_id)).available == 10_000 - 30
    assert await ledger.reconcile() == []


async def test_settlement_adjusts_the_periods_of_the_hold_and_a_new_day_starts_fresh(ledger: Ledger) -> None:
    account_id, key_id = await key(ledger, daily=100, monthly=150, total=1000)
    late_night = NOON + 11 * 3600 + 59 * 60  # 23:59 on March 31
    job_id = await hold(ledger, account_id, key_id, 90, now=late_night)
    next_morning = late_night + 120  # April 1: a new day and a new month
    assert await spent(ledger, key_id, next_morning) == {"day": 0, "month": 0, "total": 90}
    await hold(ledger, account_id, key_id, 100, now=next_morning)
    await settle(ledger, job_id, account_id, key_id, 40)
    assert await spent(ledger, key_id, late_night) == {"day": 40, "month": 40, "total": 140}
    assert await spent(ledger, key_id, next_morning) == {"day": 100, "month": 100, "total": 140}
    with pytest.raises(KeyLimitExceeded, match="daily limit"):
        await hold(ledger, account_id, key_id, 1, now=next_morning)
    second_day = next_morning + DAY
    await hold(ledger, account_id, key_id, 50, now=second_day)
    with pytest.raises(KeyLimitExceeded, match=r"monthly limit of 0.000150 credits has 0.000000 left this month"):
        await hold(ledger, account_id, key_id, 1, now=second_day)
    assert await ledger.reconcile() == []


async def test_a_burst_never_overruns_a_key_limit(ledger: Ledger) -> None:
    account_id, key_id = await key(ledger, grant=1_000_000, daily=100)
    results = await asyncio.gather(*(hold(ledger, account_id, key_id, 10) for _ in range(40)), return_exceptions=True)
    assert sum(isinstance(result, str) for result in results) == 10
    assert all(isinstance(result, (str, KeyLimitExceeded)) for result in results), results
    assert await spent(ledger, key_id) == {"day": 100, "month": 100, "total": 100}
    assert (await ledger.balance(account_id)).held == 100
    assert await ledger.reconcile() == []


async def test_revoked_or_expired_keys_hold_nothing(ledger: Ledger) -> None:
    for limits in ({}, {"daily": 1000}):  # the one-statement path and the portable one
        account_id, key_id = await key(ledger, **limits)
        await change_key(ledger.engine, key_id, {"expires_at": NOON + 60}, now=NOON)
        await hold(ledger, account_id, key_id, 10)
        with pytest.raises(KeyExpired, match="This API key expired at 2030-03-31T12:01:00"):
            await hold(ledger, account_id, key_id, 10, now=NOON + 61)
        await change_key(ledger.engine, key_id, {}, revoke=True)
        with pytest.raises(KeyRevoked, match="revoked"):
            await hold(ledger, account_id, key_id, 10)
        balance = await ledger.balance(account_id)
        assert (balance.available, balance.held) == (10_000 - 10, 10)
    assert await ledger.reconcile() == []


async def test_a_first_limit_starts_from_what_the_key_spent(ledger: Ledger) -> None:
    now = await database_now(ledger)  # the usage rows' clock: seeding counts them in now's day
    account_id, key_id = await key(ledger)
    await settle(ledger, await hold(ledger, account_id, key_id, 50, now=now), account_id, key_id, 30, now=now)
    running = await hold(ledger, account_id, key_id, 20, now=now)
    await change_key(ledger.engine, key_id, {"total_limit": 60}, now=now)
    assert await spent(ledger, key_id, now) == {"day": 50, "month": 50, "total": 50}
    with pytest.raises(KeyLimitExceeded, match="has 0.000010 left"):
        await hold(ledger, account_id, key_id, 11, now=now)
    await settle(ledger, running, account_id, key_id, 5, now=now)  # the hold from before the limit, settled after
    assert await spent(ledger, key_id, now) == {"day": 35, "month": 35, "total": 35}
    await change_key(ledger.engine, key_id, {"total_limit": None}, now=now)
    uncounted = await hold(ledger, account_id, key_id, 500, now=now)
    await settle(ledger, uncounted, account_id, key_id, 500, now=now)
    await change_key(ledger.engine, key_id, {"daily_limit": 1000}, now=now)
    assert await spent(ledger, key_id, now) == {"day": 535, "month": 535, "total": 535}
    assert await ledger.reconcile() == []


async def test_a_first_limit_set_during_a_burst_counts_every_hold(ledger: Ledger) -> None:
    account_id, key_id = await key(ledger, grant=1_000_000)

    now = await database_now(ledger)  # as in test_a_first_limit_starts_from_what_the_key_spent

    async def burst() -> None:
        for _ in range(20):
            await hold(ledger, account_id, key_id, 7, now=now)

    async def limit() -> None:
        await asyncio.sleep(0.01)
        await change_key(ledger.engine, key_id, {"daily_limit": 1_000_000}, now=now)

    await asyncio.gather(burst(), burst(), burst(), limit())
    assert await spent(ledger, key_id, now) == {"day": 420, "month": 420, "total": 420}
    assert await ledger.reconcile() == []


async def test_a_first_limit_set_while_unheld_costs_settle_counts_each_once(ledger: Ledger) -> None:
    now = await database_now(ledger)  # as in test_a_first_limit_starts_from_what_the_key_spent
    account_id, key_id = await key(ledger, grant=1_000_000)

    async def reports() -> None:  # usage events of jobs without a hold row
        for _ in range(20):
            await settle(ledger, uuid.uuid4().hex, account_id, key_id, 7, now=now)

    async def limit() -> None:
        await asyncio.sleep(0.01)
        await change_key(ledger.engine, key_id, {"total_limit": 1_000_000}, now=now)

    await asyncio.gather(reports(), reports(), reports(), limit())
    assert await spent(ledger, key_id, now) == {"day": 420, "month": 420, "total": 420}
    assert await ledger.reconcile() == []


async def test_reconcile_finds_a_tampered_key_counter(ledger: Ledger) -> None:
    account_id, key_id = await key(ledger, total=1000)
    await hold(ledger, account_id, key_id, 10)
    async with ledger.engine.begin() as connection:
        await connection.execute(
            text("UPDATE key_spend SET amount = amount - 3 WHERE key_id = :k AND period = 'total'"), {"k": key_id})
    found = await ledger.reconcile()
    assert [(d.what, d.recorded, d.recomputed) for d in found] == [(f"key {key_id} total spend", 7, 10)]


operations = st.lists(
    st.tuples(st.sampled_from(["hold", "settle", "release", "sweep", "limit", "unlimit"]), st.integers(0, 5),
              st.integers(0, 120), st.integers(0, 100)),
    max_size=25,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations)
# A hold released before the key's first limit, settled after it.
@example(steps=[("unlimit", 0, 0, 0), ("hold", 1, 17, 0), ("release", 1, 0, 0), ("limit", 0, 0, 0),
                ("settle", 1, 0, 6)])
# A refused hold: its job never runs.
@example(steps=[("hold", 0, 120, 0), ("hold", 1, 120, 0), ("hold", 2, 120, 0), ("settle", 2, 0, 100)])
# A job that reports after the sweeper released its hold: spent, so counted, over the limit.
@example(steps=[("hold", 0, 120, 0), ("sweep", 0, 0, 0), ("hold", 1, 120, 0), ("hold", 2, 120, 0),
                ("hold", 3, 60, 0), ("settle", 0, 0, 100)])
def test_any_sequence_keeps_every_counter_within_its_limit_and_reconciles(
    database_template: DatabaseTemplate, steps: list[tuple[str, int, int, int]]
) -> None:
    async def run(database: Settings) -> None:
        engine = create_engine(database)
        ledger = Ledger(engine)
        try:
            account_id, key_id = await key(ledger, grant=100_000, daily=300, total=500)
            now = await database_now(ledger)  # every period is now's (a first limit counts usage rows)
            prefix, tried, holds, released, settled = uuid.uuid4().hex[:8], set(), {}, set(), set()
            # A limit set again starts from what was spent meanwhile, which may be over it.
            ceiling: dict[str, int] | None = {"day": 300, "total": 500}
            for operation, job, amount, percent in steps:
                job_id = f"{prefix}-{job}"
                if operation == "hold" and job_id not in tried:  # job ids are unique: one hold each
                    tried.add(job_id)
                    with contextlib.suppress(KeyLimitExceeded):
                        await ledger.hold(job_id, account_id, amount, key_id=key_id, now=now,  # type: ignore[arg-type]
                                          expires_at=time.time() + (60 if amount % 2 else -1))
                        holds[job_id] = amount  # a refused job never runs: it is never settled
                elif operation == "settle" and job_id in holds:  # costs at most the hold, as admission intends
                    cost = holds[job_id] * percent // 100
                    await settle(ledger, job_id, account_id, key_id, cost, now=now)
                    if job_id in released and job_id not in settled and ceiling is not None:
                        # Reported after its hold was released: spent all the same, over a limit if need be.
                        ceiling = {kind: limit + cost for kind, limit in ceiling.items()}
                    settled.add(job_id)
                elif operation == "release":
                    await ledger.release(job_id)
                    released |= {job_id} & (holds.keys() - settled)
                elif operation == "sweep":
                    await ledger.release_expired()
                    released |= {job for job, amount in holds.items() if amount % 2 == 0} - settled  # expired at once
                elif operation == "unlimit":
                    await change_key(engine, key_id, {"daily_limit": None, "total_limit": None}, now=now)
                    ceiling = None
                elif operation == "limit":
                    await change_key(engine, key_id, {"daily_limit": 300, "total_limit": 500}, now=now)
                    if ceiling is None:
                        spend = await spent(ledger, key_id, now)
                        ceiling = {"day": max(300, spend["day"]), "total": max(500, spend["total"])}
                if ceiling is not None:
                    spend = await spent(ledger, key_id, now)
                    assert spend["day"] <= ceiling["day"] and spend["total"] <= ceiling["total"], (spend, ceiling)
            assert await ledger.reconcile() == []
        finally:
            await engine.dispose()

    with database_template.fresh() as database:  # each example its own: no example sees another's rows
        asyncio.run(run(database))
