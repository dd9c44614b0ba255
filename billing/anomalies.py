"""Which providers' models are far off their recent baseline, by the
rollups: the last ``recent`` seconds judged against the ``baseline``
seconds before them.

The rule, per (provider, model), with at least ``min_requests`` jobs in the
recent window:
- **error rate**: the recent error rate is at least 0.25 above the
  baseline's and at least twice it (a model with no baseline traffic has a
  baseline of 0);
- **latency**: with at least ``min_requests`` timed jobs in both windows,
  the recent mean latency is at least 3 times the baseline's and at least
  500 ms above it.
Both are on minutes (``billing.usage_stats``), so a window's edges are
minute-granular.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from billing.rollups import minute_of
from billing.usage_stats import Totals, totals

ERROR_RATE_RISE = 0.25
ERROR_RATE_FACTOR = 2.0
LATENCY_FACTOR = 3.0
LATENCY_RISE_MS = 500.0
RULE = (f"error rate: recent >= baseline + {ERROR_RATE_RISE} and >= {ERROR_RATE_FACTOR:g} x baseline; "
        f"latency: recent mean >= {LATENCY_FACTOR:g} x baseline mean and >= baseline + {LATENCY_RISE_MS:g} ms; "
        "each needs min_requests jobs recently (latency: in the baseline too)")


@dataclass(frozen=True, slots=True)
class Anomaly:
    provider: str
    model: str
    kind: str  # "error_rate" | "latency"
    recent: float
    baseline: float
    recent_requests: int
    baseline_requests: int


def judge(recent: Totals, baseline: Totals | None, min_requests: int) -> list[Anomaly]:
    """The anomalies of one provider's model."""
    if recent["requests"] < min_requests:
        return []
    found = []
    provider, model = recent.group["provider"], recent.group["model"]
    before = baseline["requests"] if baseline is not None else 0
    rate = recent.error_rate or 0.0
    usual = (baseline.error_rate if baseline is not None else None) or 0.0
    if rate >= usual + ERROR_RATE_RISE and rate >= usual * ERROR_RATE_FACTOR:
        found.append(Anomaly(provider, model, "error_rate", rate, usual, recent["requests"], before))
    slow, usual_ms = recent.mean_latency_ms, baseline.mean_latency_ms if baseline is not None else None
    if (slow is not None and usual_ms is not None and baseline is not None and recent["timed"] >= min_requests
            and baseline["timed"] >= min_requests and slow >= usual_ms * LATENCY_FACTOR
            and slow >= usual_ms + LATENCY_RISE_MS):
        found.append(Anomaly(provider, model, "latency", slow, usual_ms, recent["requests"], before))
    return found


async def anomalies(engine: AsyncEngine, *, recent: int, baseline: int, min_requests: int,
                    now: float | None = None) -> list[Anomaly]:
    now = time.time() if now is None else now
    start = minute_of(now - recent)
    latest = await totals(engine, since=start, by=("provider", "model"))
    before = {(total.group["provider"], total.group["model"]): total
              for total in await totals(engine, since=start - baseline, until=start, by=("provider", "model"))}
    return [anomaly for total in latest
            for anomaly in judge(total, before.get((total.group["provider"], total.group["model"])), min_requests)]


def anomaly_object(anomaly: Anomaly) -> dict[str, Any]:
    return {"object": "anomaly", "provider": anomaly.provider, "model": anomaly.model, "kind": anomaly.kind,
            "recent": anomaly.recent, "baseline": anomaly.baseline, "recent_requests": anomaly.recent_requests,
            "baseline_requests": anomaly.baseline_requests}
