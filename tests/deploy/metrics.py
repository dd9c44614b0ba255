"""The metric names agreed for issue 13 (the metrics branch defines them;
alerts and dashboards refer to them), and a reader of the PromQL in
``deploy/`` that finds which series and labels an expression uses."""

from __future__ import annotations

import re
from dataclasses import dataclass

PRIORITIES = frozenset({"realtime", "standard", "bulk", "batch"})

# name -> (type, labels). Counters are named with their ``_total``.
AGREED: dict[str, tuple[str, frozenset[str]]] = {
    name: (kind, frozenset(labels.split())) for name, kind, labels in [
        ("gatewayz_requests_total", "counter", "route model provider status priority"),
        ("gatewayz_request_duration_seconds", "histogram", "route priority"),
        ("gatewayz_time_to_first_token_seconds", "histogram", "route priority"),
        ("gatewayz_queue_wait_seconds", "histogram", "pool priority"),
        ("gatewayz_tokens_total", "counter", "direction provider model"),
        ("gatewayz_cost_credits_total", "counter", "provider model"),
        ("gatewayz_queue_depth", "gauge", "pool priority"),
        ("gatewayz_jobs_in_flight", "gauge", "pool"),
        ("gatewayz_pool_service_rate", "gauge", "pool"),
        ("gatewayz_estimated_wait_seconds", "gauge", "pool priority"),
        ("gatewayz_pool_consumers", "gauge", "pool"),
        ("gatewayz_circuit_state", "gauge", "provider model"),
        ("gatewayz_upstream_errors_total", "counter", "provider kind"),
        ("gatewayz_retries_total", "counter", "provider"),
        ("gatewayz_failovers_total", "counter", "from_provider to_provider"),
        ("gatewayz_holds_outstanding", "gauge", ""),
        ("gatewayz_credits_held", "gauge", ""),
        ("gatewayz_settlement_lag_seconds", "histogram", ""),
        ("gatewayz_billing_batch_size", "histogram", ""),
        ("gatewayz_rate_limit_refusals_total", "counter", "scope"),
        ("gatewayz_admission_refusals_total", "counter", "pool reason"),
        ("gatewayz_dead_letters_total", "counter", "reason"),
        ("gatewayz_batch_lines_total", "counter", "outcome"),
        ("gatewayz_batches", "gauge", "status"),
    ]
}
# Values some labels may take; a matcher with another is a typo that matches nothing.
LABEL_VALUES = {"priority": PRIORITIES, "direction": frozenset({"input", "output"})}
# Labels Prometheus adds to every scraped series (deploy/prometheus/*.yml).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod"})
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")

SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


@dataclass(frozen=True)
class Series:
    name: str
    family: str | None  # the agreed metric it belongs to, if any
    matchers: tuple[tuple[str, str, str], ...]


def series(expr: str) -> list[Series]:
    """The ``gatewayz_…`` and ``up`` series an expression selects."""
    found = []
    for match in SELECTOR.finditer(expr):
        name = match.group(1)
        if not name.startswith("gatewayz_") and name != "up":
            continue
        family = name if name in AGREED else next(
            (name.removesuffix(suffix) for suffix in HISTOGRAM_SERIES
             if name.endswith(suffix) and AGREED.get(name.removesuffix(suffix), ("",))[0] == "histogram"), None)
        found.append(Series(name, family, tuple(MATCHER.findall(match.group(2) or ""))))
    return found


def promql_problems(expr: str) -> list[str]:
    """Unknown metrics, a histogram read as one series, and labels the
    metrics in ``expr`` do not have (in matchers or in ``by``/``without``)."""
    problems = []
    used = series(expr)
    labels = set(TARGET_LABELS)
    for item in used:
        if item.name == "up":
            continue
        if item.family is None:
            problems.append(f"{item.name} is not one of the agreed metrics")
            continue
        kind, own = AGREED[item.family]
        if kind == "histogram" and item.name == item.family:
            problems.append(f"{item.name} is a histogram: read its _bucket, _sum or _count")
        allowed = own | TARGET_LABELS | ({"le"} if item.name.endswith("_bucket") else set())
        labels |= allowed
        for label, operator, value in item.matchers:
            if label not in allowed:
                problems.append(f"{item.name} has no label {label!r}")
            elif operator == "=" and value not in LABEL_VALUES.get(label, {value}):
                problems.append(f"{item.name}{{{label}={value!r}}} matches nothing")
    for group in GROUPING.findall(expr):
        problems += [f"grouping by {label!r}, which no metric here has"
                     for label in (part.strip() for part in group.split(",")) if label and label not in labels]
    return problems


def jobs_selected(expr: str) -> set[str]:
    """The scrape jobs named in an expression's ``job`` matchers (``a|b`` alternatives too)."""
    return {job for item in series(expr) for label, _, value in item.matchers if label == "job"
            for job in value.split("|") if job and not set(job) & set(".*+?[]()")}
