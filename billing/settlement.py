"""Settlement by group commit: a batch of usage events charged in one
database transaction, each job once.

For the batch, in one transaction: the usage rows (``job_id`` unique: a
duplicate inserts nothing and is left out of the rest), the jobs' holds
closed (a hold the ledger never had, because the balances mirror took it,
gets a closed row, so a late hold journal cannot open it again), expiring
credit drawn down, one ``charge`` transaction per job, one update of all
the batch's accounts (raising each one's ``seq``), the key spend
counters moved, and the results of the batch-API lines among the jobs
written, with their batches' counters (``billing.batch_results``); each a
statement built once (``billing.statements``) and run with the whole
batch's rows. Then the mirror is told (``Ledger.followed``), duplicates included: a batch whose
consumer died between its commit and the mirror is sent again, and the
mirror applies each job once.

A batch that fails is settled again one event at a time, so one bad event
never holds up the others.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, Row, Select, Update, literal_column, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ReturningInsert

from billing import limits, rollups
from billing.balances import AccountChange, Settled
from billing.batch_results import record_lines
from billing.postings import AVAILABLE, HELD, REVENUE, Entry, NewTransaction, draw_down_grants, move_many, record_many
from billing.pricing import Charge, charge
from billing.statements import among, ignoring_duplicates, insert_for, per_dialect
from schema.jobs import UsageEvent
from schema.tables import holds, ledger_transactions, usage_records

if TYPE_CHECKING:
    from billing.ledger import Ledger

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    settled: list[str]  # jobs charged by this batch
    duplicates: list[str]  # jobs charged before


@dataclass(frozen=True, slots=True)
class _Job:
    event: UsageEvent
    charge: Charge
    held: int  # what its hold in the ledger gives back (0: it had none open)
    periods: tuple[str, ...]  # where its key counts it in the ledger (none: its key has no limit)
    held_in: tuple[str, ...]  # the periods of its hold's moment, where the mirror counts it
    recorded_now: bool = False  # the ledger never had its hold (the mirror took it): it is recorded here


async def settle(ledger: Ledger, events: Sequence[UsageEvent], *, now: float | None = None) -> Outcome:
    """Charge every event's job once; raises only if the whole batch and then
    an event alone fails (``DBAPIError``)."""
    unique = list({event.job_id: event for event in reversed(events)}.values())[::-1]
    try:
        return await _settle(ledger, unique, time.time() if now is None else now)
    except DBAPIError:
        if len(unique) == 1:
            raise
        log.warning("a batch of %d usage events failed; settling them one by one", len(unique), exc_info=True)
    settled: list[str] = []
    duplicates: list[str] = []
    for event in unique:
        outcome = await _settle(ledger, [event], time.time() if now is None else now)
        settled += outcome.settled
        duplicates += outcome.duplicates
    return Outcome(settled, duplicates)


async def _settle(ledger: Ledger, events: list[UsageEvent], now: float) -> Outcome:
    charges = {event.job_id: charge(event.usage, event.price, event.hold) for event in events}
    async with ledger.engine.begin() as connection:
        fresh = await _record_usage(connection, events, charges)
        settling = [event for event in events if event.job_id in fresh]
        await rollups.add(connection, ((event, charges[event.job_id].cost) for event in settling))
        jobs = await _close_holds(connection, settling, charges, now)
        changes = await _charge(ledger, connection, jobs, now)
        await record_lines(connection, settling)
    duplicates = [event for event in events if event.job_id not in fresh]
    for job in jobs:
        if job.charge.absorbed:
            log.warning("job %s: its usage cost %d micro-credits more than its hold of %d; not charged",
                        job.event.job_id, job.charge.absorbed, job.event.hold, extra={"job_id": job.event.job_id})
    await ledger.followed(changes + await _charged_before(ledger, duplicates))
    return Outcome([job.event.job_id for job in jobs], [event.job_id for event in duplicates])


@per_dialect
def _insert_usage(dialect: str) -> ReturningInsert[Any]:
    return ignoring_duplicates(dialect, usage_records, ("job_id",)).returning(usage_records.c.job_id)


async def _record_usage(connection: AsyncConnection, events: list[UsageEvent], charges: dict[str, Charge]) -> set[str]:
    """The usage rows; the jobs whose row is new (the others were settled before)."""
    rows = [{
        "job_id": event.job_id, "account_id": event.account_id, "key_id": event.key_id, "provider": event.provider,
        "model": event.model, "input_tokens": event.usage.input_tokens, "output_tokens": event.usage.output_tokens,
        "images": event.usage.images, "reported": event.usage.reported, "cost": charges[event.job_id].cost,
        "uncharged": charges[event.job_id].absorbed, "finished_at": event.finished_at,
        "batch_id": event.batch.batch_id if event.batch else None, **_outcome_columns(event),
    } for event in events]
    return set((await connection.execute(_insert_usage(connection), rows)).scalars())


def _outcome_columns(event: UsageEvent) -> dict[str, Any]:
    outcome = event.outcome
    if outcome is None:
        return dict.fromkeys(("status", "error_type", "latency_ms", "ttft_ms", "queue_ms"))
    return outcome.model_dump()


@per_dialect
def _claim_holds(dialect: str) -> Update:
    return (update(holds).where(among(holds.c.job_id, "job_ids", dialect), holds.c.closed.is_(False))
            .values(closed=True).returning(holds.c.job_id, holds.c.amount, holds.c.key_periods))


@per_dialect
def _holds_of(dialect: str) -> Select[Any]:
    return select(holds.c.job_id, holds.c.key_periods).where(among(holds.c.job_id, "job_ids", dialect))


async def _close_holds(connection: AsyncConnection, events: list[UsageEvent], charges: dict[str, Charge],
                       now: float) -> list[_Job]:
    """Close each job's hold in the ledger: an open one gives its amount back;
    one the ledger never had gets a closed row; one released before (its job
    reported after its deadline) gives nothing back. A job no hold counted
    in its key's periods (the key had no limit then) is counted in them if
    the key has a limit now."""
    if not events:
        return []
    limited = await limits.limited_keys(connection, {event.key_id for event in events})  # before any hold row
    ids = [event.job_id for event in events]
    claimed = {row.job_id: row for row in await connection.execute(_claim_holds(connection), {"job_ids": ids})}
    unclaimed = [event for event in events if event.job_id not in claimed]
    tombstones = [{
        "job_id": event.job_id, "account_id": event.account_id, "amount": event.hold or 0, "closed": True,
        "expires_at": event.finished_at, "key_id": event.key_id,
        "key_periods": _periods(event, now) if event.key_id in limited else None,
    } for event in unclaimed]
    new: set[str] = set()
    if tombstones:
        new, journaled = await _insert_closed(connection, tombstones)
        claimed.update(journaled)
    before = [event.job_id for event in unclaimed if event.job_id not in new and event.job_id not in claimed]
    released = {row.job_id: row.key_periods for row in await connection.execute(
        _holds_of(connection), {"job_ids": before})} if before else {}
    jobs = []
    for event in events:
        charged, uncounted = charges[event.job_id], _periods(event, now) if event.key_id in limited else None
        if event.job_id in claimed:
            row = claimed[event.job_id]
            jobs.append(_Job(event, charged, row.amount, _split(row.key_periods), _split(_periods(event, now))))
        elif event.job_id in new:
            jobs.append(_Job(event, charged, event.hold or 0, _split(uncounted), _split(_periods(event, now)),
                             recorded_now=True))
        else:
            periods = released.get(event.job_id) or uncounted
            jobs.append(_Job(event, charged, 0, _split(periods), _split(_periods(event, now))))
    return jobs


@per_dialect
def _insert_closed_holds(dialect: str) -> ReturningInsert[*tuple[Any, ...]]:
    statement = insert_for(dialect)(holds).on_conflict_do_update(
        index_elements=["job_id"], set_={"closed": True}, where=holds.c.closed.is_(False))
    # xmax is 0 on a row this statement inserted (PostgreSQL); SQLite has one writer, so no row was open.
    inserted = literal_column("xmax = 0" if dialect == "postgresql" else "1", Boolean).label("inserted")
    return statement.returning(holds.c.job_id, holds.c.amount, holds.c.key_periods, inserted)


async def _insert_closed(connection: AsyncConnection,
                         rows: list[dict[str, Any]]) -> tuple[set[str], dict[str, Row[*tuple[Any, ...]]]]:
    """Insert holds closed; the jobs inserted, and those whose open hold the
    hold journal committed meanwhile (claimed instead: PostgreSQL waits for
    the journal's row, then updates it). A closed row is left as it is."""
    found = (await connection.execute(_insert_closed_holds(connection), rows)).all()
    return {row.job_id for row in found if row.inserted}, {row.job_id: row for row in found if not row.inserted}


async def _charge(ledger: Ledger, connection: AsyncConnection, jobs: list[_Job], now: float) -> list[AccountChange]:
    """The charge transactions, the accounts' balances and the keys' counters."""
    if not jobs:
        return []
    by_account: dict[int, list[_Job]] = defaultdict(list)
    for job in jobs:
        by_account[job.event.account_id].append(job)
    # Lock order, as everywhere: credit grants, then the account, then system accounts and key counters.
    await draw_down_grants(connection, {account_id: sum(job.charge.cost for job in account_jobs)
                                        for account_id, account_jobs in by_account.items()}, now)
    # A hold recorded now moves nothing on balance: it is taken and given back in this one transaction.
    seqs = await move_many(connection, {
        account_id: (sum((0 if job.recorded_now else job.held) - job.charge.cost for job in account_jobs),
                     -sum(0 if job.recorded_now else job.held for job in account_jobs))
        for account_id, account_jobs in by_account.items()})
    # A hold recorded now gets its own transaction, as the hold journal would
    # have written it: the ledger reads the same whichever recorded it.
    recorded: list[NewTransaction] = [{"kind": "hold", "reference": job.event.job_id, "seq": None} for job in jobs
                                      if job.recorded_now and job.held]
    charges: list[NewTransaction] = [{"kind": "charge", "reference": job.event.job_id,
                                      "seq": seqs[job.event.account_id]} for job in jobs]
    revenue = await ledger.system_account(connection, REVENUE)
    entries = []
    for job in jobs:
        account_id, cost, held, job_id = job.event.account_id, job.charge.cost, job.held, job.event.job_id
        postings = [("charge", account_id, HELD, -held), ("charge", account_id, AVAILABLE, held - cost),
                    ("charge", revenue, AVAILABLE, cost)]
        if job.recorded_now:
            postings = [("hold", account_id, AVAILABLE, -held), ("hold", account_id, HELD, held), *postings]
        entries += [Entry(kind, job_id, account, bucket, amount) for kind, account, bucket, amount in postings]
    await record_many(connection, recorded + charges, entries)
    moves: dict[tuple[int, str], int] = defaultdict(int)
    for job in jobs:
        for period in job.periods:
            moves[(job.event.key_id, period)] += job.charge.cost - (0 if job.recorded_now else job.held)
    await limits.add_many(connection, moves)
    return [AccountChange(account_id, seqs[account_id], settled=tuple(
        Settled(job.event.job_id, job.charge.cost, job.event.key_id, job.periods or job.held_in)
        for job in account_jobs))
        for account_id, account_jobs in by_account.items()]


async def resend(ledger: Ledger, job_ids: Sequence[str]) -> list[str]:
    """Tell the mirror again of these jobs' charges, as they committed; the jobs that were charged."""
    changes = await _charged_before(ledger, list(job_ids))
    await ledger.followed(changes)
    return [settled.job_id for change in changes for settled in change.settled]


async def _charged_before(ledger: Ledger, duplicates: list[UsageEvent] | list[str]) -> list[AccountChange]:
    """The mirror's changes of jobs settled before, as they committed."""
    if not duplicates:
        return []
    ids = [item if isinstance(item, str) else item.job_id for item in duplicates]
    async with ledger.engine.connect() as connection:
        rows = (await connection.execute(_charges_of(connection), {"job_ids": ids})).all()
    return [AccountChange(row.account_id, row.seq, settled=(
        Settled(row.job_id, row.cost, row.key_id, _split(row.key_periods)),)) for row in rows]


@per_dialect
def _charges_of(dialect: str) -> Select[Any]:
    charged = (ledger_transactions.c.kind == "charge") & (ledger_transactions.c.reference == usage_records.c.job_id)
    return (
        select(usage_records.c.job_id, usage_records.c.account_id, usage_records.c.key_id, usage_records.c.cost,
               ledger_transactions.c.seq, holds.c.key_periods)
        .join(ledger_transactions, charged)
        .join(holds, holds.c.job_id == usage_records.c.job_id, isouter=True)
        .where(among(usage_records.c.job_id, "job_ids", dialect), ledger_transactions.c.seq.is_not(None))
    )


def _periods(event: UsageEvent, now: float) -> str:
    """The key periods a job counts in: those of its hold's moment (unknown: those it settles in)."""
    return " ".join(limits.periods_at(event.held_at if event.held_at is not None else now).values())


def _split(periods: str | None) -> tuple[str, ...]:
    return tuple(periods.split()) if periods else ()
