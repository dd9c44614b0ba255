"""A worker process's metrics: how long jobs waited in their queue before
a worker took them, upstream errors by kind, retries and failovers.

Observed in the worker loop where each fact is known
(``workers.pool.loop``, ``attempts``, ``handoff``), on series bound once.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from scheduler.priority import BATCH_PRIORITY, MESSAGE_PRIORITY
from schema.errors import GatewayError, GatewayTimeout, ProviderUnavailable
from schema.metrics import MetricsRegistry, Series

QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0)
# A job carries its message priority; a metric names its class.
PRIORITY_NAMES = {**{level: name for name, level in MESSAGE_PRIORITY.items()}, BATCH_PRIORITY: "batch"}


class WorkerMetrics:
    def __init__(self, registry: MetricsRegistry) -> None:
        on = registry.families
        self._queue_wait = Series(Histogram(
            "gatewayz_queue_wait_seconds", "Seconds a job waited in its pool's queue before a worker took it",
            ["pool", "priority"], buckets=QUEUE_WAIT_BUCKETS, registry=on))
        self._errors = Series(Counter(
            "gatewayz_upstream_errors", "Failed upstream attempts, by provider and kind (see error_kind)",
            ["provider", "kind"], registry=on))
        self._retries = Series(Counter(
            "gatewayz_retries", "Attempts retried on the same provider", ["provider"], registry=on))
        self._failovers = Series(Counter(
            "gatewayz_failovers", "Jobs handed to the next candidate provider", ["from_provider", "to_provider"],
            registry=on))

    def waited(self, pool: str, priority: int, seconds: float) -> None:
        self._queue_wait(pool, PRIORITY_NAMES.get(priority, "")).observe(seconds)

    def upstream_failed(self, provider: str, error: GatewayError) -> None:
        self._errors(provider, error_kind(error)).inc()

    def retried(self, provider: str) -> None:
        self._retries(provider).inc()

    def failed_over(self, from_provider: str, to_provider: str) -> None:
        self._failovers(from_provider, to_provider).inc()


def error_kind(error: GatewayError) -> str:
    """What failed, as the gateway judged it, never in the upstream's own
    words (the label keeps a small set of values): ``timeout``,
    ``unavailable`` (unreachable, or refused the gateway's credentials),
    ``rate_limited`` (429), ``invalid_request`` (another 4xx), else ``error``."""
    if isinstance(error, GatewayTimeout):
        return "timeout"
    if isinstance(error, ProviderUnavailable):
        return "unavailable"
    if error.status == 429:
        return "rate_limited"
    if 400 <= error.status < 500:
        return "invalid_request"
    return "error"
