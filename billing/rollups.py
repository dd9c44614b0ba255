"""Monitoring's aggregates, kept as traffic flows: the rows a settlement
batch adds to ``usage_rollups`` (per minute, provider, model and account),
in the batch's own transaction, so the monitoring API reads minutes rather
than usage rows, and nothing is measured on the request path.

The batch's jobs are summed here first, so a batch adds one row per key it
touches, with one statement built once per dialect and run with all of
them (``INSERT … ON CONFLICT DO UPDATE SET n = n + excluded.n``). Rows are
written in key order: two billing consumers adding to the same minutes lock
them in the same order, and never deadlock.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from billing.statements import DialectInsert, insert_for, per_dialect
from schema.jobs import UsageEvent
from schema.tables import LATENCY_BOUNDS_MS, LATENCY_BUCKETS, usage_rollups

COUNTS = tuple(column.name for column in usage_rollups.columns if not column.primary_key)
RollupKey = tuple[int, str, str, int]  # minute, provider, model, account


def minute_of(at: float) -> int:
    return int(at // 60) * 60


def latency_bucket(latency_ms: int) -> str:
    """The histogram column a latency counts in: the first bound it does not exceed."""
    return LATENCY_BUCKETS[bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)]


def rollup_rows(events: Iterable[tuple[UsageEvent, int]]) -> list[dict[str, Any]]:
    """What ``(event, cost)`` pairs add to the rollups, one row per key, in key order."""
    sums: dict[RollupKey, dict[str, Any]] = {}
    for event, cost in events:
        key = (minute_of(event.finished_at), event.provider, event.model, event.account_id)
        row = sums.get(key)
        if row is None:
            row = sums[key] = dict.fromkeys(COUNTS, 0)
            row.update(minute=key[0], provider=key[1], model=key[2], account_id=key[3])
        outcome = event.outcome
        row["requests"] += 1
        row["input_tokens"] += event.usage.input_tokens
        row["output_tokens"] += event.usage.output_tokens
        row["cost"] += cost
        if outcome is None:
            continue
        row["errors"] += outcome.failed
        row["upstream_errors"] += outcome.status >= 500
        if outcome.queue_ms is not None:
            row["queue_ms"] += outcome.queue_ms
        if outcome.latency_ms is not None:
            row["timed"] += 1
            row["latency_ms"] += outcome.latency_ms
            row[latency_bucket(outcome.latency_ms)] += 1
        if outcome.ttft_ms is not None:
            row["first_tokens"] += 1
            row["ttft_ms"] += outcome.ttft_ms
    return [sums[key] for key in sorted(sums)]


@per_dialect
def _add_to_rollups(dialect: str) -> DialectInsert:
    statement = insert_for(dialect)(usage_rollups)
    return statement.on_conflict_do_update(
        index_elements=[column.name for column in usage_rollups.primary_key],
        set_={name: usage_rollups.c[name] + statement.excluded[name] for name in COUNTS})


async def add(connection: AsyncConnection, events: Iterable[tuple[UsageEvent, int]]) -> None:
    """Add the settled jobs to the rollups, in the caller's transaction."""
    rows = rollup_rows(events)
    if rows:
        await connection.execute(_add_to_rollups(connection), rows)
