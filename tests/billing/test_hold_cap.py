"""Settlement charges at most a job's hold, on both databases: what an
upstream reports beyond it is recorded as ``uncharged`` and absorbed by the
gateway, and counts of any size are kept."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

from sqlalchemy import select

from billing.ledger import Ledger
from schema.jobs import Price, Usage, UsageEvent
from schema.tables import usage_records

PRICE = Price(input_per_mtok=Decimal("1"), output_per_mtok=Decimal("2"))


async def settle(ledger: Ledger, usage: Usage, *, hold: int, grant: int = 1000) -> tuple[int, str]:
    account_id = await ledger.create_account("t", grant)  # type: ignore[arg-type]
    key_id = await ledger.create_key(account_id, "t", uuid.uuid4().hex, "gz-t")
    job_id = f"job_{uuid.uuid4().hex}"
    await ledger.hold(job_id, account_id, hold, key_id=key_id, expires_at=time.time() + 60)  # type: ignore[arg-type]
    assert await ledger.settle(UsageEvent(job_id=job_id, account_id=account_id, key_id=key_id, provider="p",
                                          model="m", usage=usage, price=PRICE, hold=hold))
    return account_id, job_id


async def recorded(ledger: Ledger, job_id: str) -> tuple[int, int, int, int]:
    async with ledger.engine.connect() as connection:
        row = (await connection.execute(
            select(usage_records.c.cost, usage_records.c.uncharged, usage_records.c.input_tokens,
                   usage_records.c.output_tokens).where(usage_records.c.job_id == job_id))).one()
    return row.cost, row.uncharged, row.input_tokens, row.output_tokens


async def test_usage_beyond_the_hold_charges_the_hold(ledger: Ledger) -> None:
    account_id, job_id = await settle(ledger, Usage(input_tokens=10, output_tokens=500), hold=300)
    balance = await ledger.balance(account_id)
    assert (balance.available, balance.held) == (700, 0), "1,010 micro-credits of usage; 300 held and charged"
    assert await recorded(ledger, job_id) == (300, 710, 10, 500)
    assert await ledger.reconcile() == []


async def test_usage_within_the_hold_charges_the_usage(ledger: Ledger) -> None:
    account_id, job_id = await settle(ledger, Usage(input_tokens=10, output_tokens=20), hold=300)
    assert (await ledger.balance(account_id)).available == 950
    assert await recorded(ledger, job_id) == (50, 0, 10, 20)


async def test_counts_beyond_32_bits_are_recorded(ledger: Ledger) -> None:
    account_id, job_id = await settle(ledger, Usage(input_tokens=2**40, output_tokens=2**45), hold=1000)
    assert (await ledger.balance(account_id)).available == 0
    cost, uncharged, input_tokens, output_tokens = await recorded(ledger, job_id)
    assert (cost, input_tokens, output_tokens) == (1000, 2**40, 2**45)
    assert uncharged == 2**40 + 2 * 2**45 - 1000
