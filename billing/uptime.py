"""Availability over time, by provider or by model, from the rollups: per
bucket, the share of jobs that were not the provider's or the gateway's
fault (status < 500), and incidents, the runs of consecutive buckets whose
availability fell below a threshold. A bucket without traffic has no
availability and ends a run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from billing.rollups import minute_of
from billing.usage_stats import Totals, totals
from schema.coupons import iso_time


@dataclass
class Incident:
    start: int
    end: int  # exclusive
    requests: int = 0
    upstream_errors: int = 0


@dataclass
class Timeline:
    name: str
    buckets: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    requests: int = 0
    upstream_errors: int = 0


async def timelines(engine: AsyncEngine, by: Literal["provider", "model"], *, window: int, bucket: int,
                    threshold: float, now: float | None = None) -> dict[str, Timeline]:
    now = time.time() if now is None else now
    first = minute_of(now - window) // bucket * bucket
    starts = range(first, minute_of(now) + 1, bucket)
    found: dict[str, dict[int, Totals]] = {}
    for total in await totals(engine, since=first, by=(by, "bucket"), bucket_seconds=bucket):
        found.setdefault(total.group[by], {})[total.group["bucket"]] = total
    return {name: timeline_from(name, seen, starts, bucket, threshold) for name, seen in sorted(found.items())}


def timeline_from(name: str, seen: dict[int, Totals], starts: range, bucket: int, threshold: float) -> Timeline:
    """One provider's or model's bars over ``starts``, from its totals per bucket start (``seen``)."""
    timeline = Timeline(name)
    ongoing: Incident | None = None
    for start in starts:
        total = seen.get(start)
        availability = total.availability if total is not None else None
        requests = total["requests"] if total is not None else 0
        errors = total["upstream_errors"] if total is not None else 0
        timeline.buckets.append({"start": iso_time(start), "requests": requests, "upstream_errors": errors,
                                 "availability": availability})
        timeline.requests += requests
        timeline.upstream_errors += errors
        if availability is not None and availability < threshold:
            if ongoing is None:
                ongoing = Incident(start, start + bucket)
                timeline.incidents.append(ongoing)
            ongoing.end, ongoing.requests, ongoing.upstream_errors = (start + bucket, ongoing.requests + requests,
                                                                      ongoing.upstream_errors + errors)
        else:
            ongoing = None
    return timeline


def timeline_object(timeline: Timeline, key: str) -> dict[str, Any]:
    requests = timeline.requests
    return {
        key: timeline.name,
        "requests": requests,
        "upstream_errors": timeline.upstream_errors,
        "uptime": round(1 - timeline.upstream_errors / requests, 4) if requests else None,
        "buckets": timeline.buckets,
        "incidents": [{"start": iso_time(incident.start), "end": iso_time(incident.end),
                       "requests": incident.requests, "upstream_errors": incident.upstream_errors}
                      for incident in timeline.incidents],
    }
