"""What the billing role sweeps every few seconds: holds whose job never
reported by its deadline (in the ledger, and the balances mirror's own),
and expired trial credit.

A hold the mirror still has open past its expiry is looked up in the
ledger: charged there, its charge is sent to the mirror again (the first
time was lost); open there, the ledger's sweep releases it (and tells the
mirror); otherwise (released, or never recorded: its job was lost) the
mirror gives it back.
"""

from __future__ import annotations

import time

from sqlalchemy import select

from billing.balances import Balances
from billing.ledger import Ledger
from billing.settlement import resend
from schema.tables import holds


async def release_overdue(ledger: Ledger, balances: Balances, now: float | None = None) -> int:
    """Close the mirror's holds that are past their expiry; how many it gave back."""
    overdue = await balances.overdue(time.time() if now is None else now)
    if not overdue:
        return 0
    jobs = [job for job, _ in overdue]
    async with ledger.engine.connect() as connection:
        open_in_ledger = set((await connection.execute(
            select(holds.c.job_id).where(holds.c.job_id.in_(jobs), holds.c.closed.is_(False)))).scalars())
    charged = set(await resend(ledger, [job for job in jobs if job not in open_in_ledger]))
    released = 0
    for job, account_id in overdue:
        if job not in open_in_ledger and job not in charged:
            await balances.cancel(job, account_id)
            released += 1
    return released
