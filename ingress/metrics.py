"""The ingress's request metrics, observed once per request where the
edge (``ingress.edge``) has sent the answer: counts by route, model,
provider, status and priority class, latency, time to first token, and
the refusals of rate limits and admission.

``submit`` notes what it learns of a request (its model, class, first
pool, who answered, when the first event came) in ``RequestFacts``, which
the edge reads after the answer went out: the request's task carries them
(a context variable), so no handler passes them along. A request refused
before it was routed has none, and is counted with empty labels: a label
never holds what a client typed, so the number of series stays bounded
by the catalog.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from schema.errors import RateLimited, ServiceUnavailable
from schema.metrics import MetricsRegistry, Series

# Seconds; a request may wait in a queue and stream for minutes.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
FIRST_TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# The refusals of admission control (``ingress.placement``), by their error code.
ADMISSION_REASONS = frozenset({"queue_full", "no_workers", "circuit_open"})


@dataclass(slots=True)
class RequestFacts:
    """What ``submit`` learnt of a request, for its metrics."""

    model: str
    pool: str  # the provider whose queue it was placed on (first: its first candidate)
    priority: str
    stream: bool
    provider: str = ""  # who answered it (after any failover)
    first_at: float = 0.0  # ``perf_counter`` when its first event came


SUBMITTED: ContextVar[RequestFacts | None] = ContextVar("gatewayz_request_facts", default=None)


class IngressMetrics:
    def __init__(self, registry: MetricsRegistry) -> None:
        on = registry.families
        self._requests = Series(Counter(
            "gatewayz_requests", "Requests answered, by route, model, provider, HTTP status and priority class",
            ["route", "model", "provider", "status", "priority"], registry=on))
        self._duration = Series(Histogram(
            "gatewayz_request_duration_seconds", "From the request's handler to the answer's last byte",
            ["route", "priority"], buckets=LATENCY_BUCKETS, registry=on))
        self._first_token = Series(Histogram(
            "gatewayz_time_to_first_token_seconds", "From a streamed request's handler to its first event",
            ["route", "priority"], buckets=FIRST_TOKEN_BUCKETS, registry=on))
        self._rate_refusals = Series(Counter(
            "gatewayz_rate_limit_refusals", "Requests refused by a rate limit (429), by whose limit",
            ["scope"], registry=on))
        self._admission_refusals = Series(Counter(
            "gatewayz_admission_refusals", "Requests refused by admission control (503), by pool and reason",
            ["pool", "reason"], registry=on))

    def observe(self, route: str, status: int, started: float, error: Exception | None) -> None:
        """One answered request: ``started`` is its ``perf_counter`` as the
        edge took it; ``error`` what its handler raised, if anything."""
        took = time.perf_counter() - started
        facts = SUBMITTED.get()
        if facts is None:
            self._requests(route, "", "", str(status), "").inc()
            self._duration(route, "").observe(took)
        else:
            priority = facts.priority
            self._requests(route, facts.model, facts.provider, str(status), priority).inc()
            self._duration(route, priority).observe(took)
            if facts.stream and facts.first_at and status == 200:
                self._first_token(route, priority).observe(facts.first_at - started)
        if error is not None and status in (429, 503):
            self._refused(error, facts)

    def _refused(self, error: Exception, facts: RequestFacts | None) -> None:
        if isinstance(error, RateLimited):
            self._rate_refusals(error.scope).inc()
        elif isinstance(error, ServiceUnavailable) and error.code in ADMISSION_REASONS and facts is not None:
            self._admission_refusals(facts.pool, error.code).inc()
