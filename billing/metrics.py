"""The billing role's metrics: tokens and cost as settled (each job once,
so they are the ledger's figures, not the workers' guesses), how long
settlement lags the usage it settles, the size of each group commit, and
the dead letters read.

Observed by the settlement consumer (``billing.consumer``) after a batch
commits, and by the dead-letter reader (``billing.dead_letters``).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

from prometheus_client import Counter, Histogram

from billing.pricing import charge
from schema.jobs import UsageEvent
from schema.metrics import MetricsRegistry, Series
from schema.money import MICROS_PER_CREDIT

LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class BillingMetrics:
    def __init__(self, registry: MetricsRegistry) -> None:
        on = registry.families
        self._tokens = Series(Counter(
            "gatewayz_tokens", "Tokens settled, by direction (input, output), provider and model",
            ["direction", "provider", "model"], registry=on))
        self._cost = Series(Counter(
            "gatewayz_cost_credits", "Credits charged, by provider and model", ["provider", "model"], registry=on))
        self._lag = Histogram(
            "gatewayz_settlement_lag_seconds", "From a job's usage event to its charge committed in the ledger",
            buckets=LAG_BUCKETS, registry=on)
        self._batch = Histogram(
            "gatewayz_billing_batch_size", "Usage events per settlement transaction", buckets=BATCH_BUCKETS,
            registry=on)
        self._dead_letters = Series(Counter(
            "gatewayz_dead_letters", "Jobs that left their queue unserved, by reason", ["reason"], registry=on))

    def settled(self, events: Sequence[UsageEvent], charged: Collection[str]) -> None:
        """A committed batch: ``charged`` are the ids of the jobs it charged
        (a duplicate of a job settled before adds nothing)."""
        self._batch.observe(len(events))
        now = time.time()
        uncounted = set(charged)  # a batch may hold a job's event twice: it was charged once
        for event in events:
            if event.job_id not in uncounted:
                continue
            uncounted.discard(event.job_id)
            self._lag.observe(max(0.0, now - event.finished_at))
            usage = event.usage
            self._tokens("input", event.provider, event.model).inc(usage.input_tokens)
            self._tokens("output", event.provider, event.model).inc(usage.output_tokens)
            cost = charge(usage, event.price, event.hold).cost
            self._cost(event.provider, event.model).inc(cost / MICROS_PER_CREDIT)

    def dead_lettered(self, reason: str) -> None:
        self._dead_letters(reason).inc()
