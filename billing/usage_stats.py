"""Reading monitoring's aggregates (``usage_rollups``, kept by settlement):
sums over a window, grouped by provider, model, account or time bucket,
and what follows from a sum (error rate, mean and approximate percentile
latency, throughput).

Every read is of minute rows, however much traffic the minutes held; the
windows are minute-granular (a window of 60 s starts at the beginning of
the minute 60 s ago).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from billing.rollups import COUNTS, minute_of
from schema.tables import LATENCY_BOUNDS_MS, LATENCY_BUCKETS, usage_rollups

Grouping = Literal["provider", "model", "account_id", "bucket"]
_KEYS: dict[str, ColumnElement[Any]] = {"provider": usage_rollups.c.provider, "model": usage_rollups.c.model,
                                        "account_id": usage_rollups.c.account_id}


@dataclass(frozen=True, slots=True)
class Totals:
    """The sums of some rollup rows, and the group they were summed by."""

    group: Mapping[str, Any]
    counts: Mapping[str, int]

    def __getitem__(self, name: str) -> int:
        return self.counts[name]

    @property
    def error_rate(self) -> float | None:
        return round(self["errors"] / self["requests"], 4) if self["requests"] else None

    @property
    def availability(self) -> float | None:
        """Jobs that were not the provider's or gateway's fault; None: no traffic."""
        return round(1 - self["upstream_errors"] / self["requests"], 4) if self["requests"] else None

    @property
    def mean_latency_ms(self) -> float | None:
        return round(self["latency_ms"] / self["timed"], 1) if self["timed"] else None

    @property
    def mean_ttft_ms(self) -> float | None:
        return round(self["ttft_ms"] / self["first_tokens"], 1) if self["first_tokens"] else None

    @property
    def tokens_per_second(self) -> float | None:
        """Output tokens over the time spent producing them (latency summed)."""
        return round(self["output_tokens"] * 1000 / self["latency_ms"], 1) if self["latency_ms"] else None

    def latency_percentile(self, quantile: float) -> float | None:
        """Approximate, from the fixed histogram: linear within the bucket the
        quantile falls in; a quantile among the slowest (past the last bound)
        is reported as that bound."""
        if not self["timed"]:
            return None
        rank, below, lower = quantile * self["timed"], 0, 0
        for bound, name in zip((*LATENCY_BOUNDS_MS, None), LATENCY_BUCKETS, strict=True):
            count = self[name]
            if count and below + count >= rank:
                if bound is None:
                    return float(lower)
                return round(lower + (bound - lower) * max(0.0, rank - below) / count, 1)
            below, lower = below + count, bound if bound is not None else lower
        return float(lower)


def _bucket(seconds: int) -> ColumnElement[Any]:
    return (usage_rollups.c.minute - usage_rollups.c.minute % seconds).label("bucket")


async def totals(engine: AsyncEngine, *, since: float, until: float | None = None,
                 by: Sequence[Grouping] = (), bucket_seconds: int = 60,
                 where: Mapping[str, Any] | None = None) -> list[Totals]:
    """Sums of the minutes from ``since`` (to before ``until``), one per
    group of ``by`` (``bucket``: ``bucket_seconds`` long, aligned to the
    epoch), ordered by the group; no ``by``: one total, zeros if idle."""
    keys = [_bucket(bucket_seconds) if name == "bucket" else _KEYS[name].label(name) for name in by]
    statement = select(*keys, *(func.coalesce(func.sum(usage_rollups.c[name]), 0).label(name) for name in COUNTS))
    statement = statement.where(usage_rollups.c.minute >= minute_of(since))
    if until is not None:
        statement = statement.where(usage_rollups.c.minute < until)
    for name, value in (where or {}).items():
        if value is not None:
            statement = statement.where(_KEYS[name] == value)
    if keys:
        statement = statement.group_by(*keys).order_by(*keys)
    async with engine.connect() as connection:
        rows = (await connection.execute(statement)).mappings().all()
    return [Totals({name: row[name] for name in by}, {name: int(row[name]) for name in COUNTS}) for row in rows]


def summary(total: Totals) -> dict[str, Any]:
    """A total as the monitoring API shows it (cost in micro-credits)."""
    return {
        "requests": total["requests"],
        "errors": total["errors"],
        "error_rate": total.error_rate,
        "input_tokens": total["input_tokens"],
        "output_tokens": total["output_tokens"],
        "cost_micros": total["cost"],
        "latency_ms": {"mean": total.mean_latency_ms, "p50": total.latency_percentile(0.5),
                       "p95": total.latency_percentile(0.95)},
        "ttft_ms": {"mean": total.mean_ttft_ms},
    }
