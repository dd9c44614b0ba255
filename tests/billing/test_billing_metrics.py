"""Billing's metrics: a settled batch counts each job it charged once
(tokens, cost, lag), whatever else the batch held; and each dead letter
read is counted by its reason."""

from __future__ import annotations

import time
from decimal import Decimal

from billing.dead_letters import DeadLetterReader
from billing.metrics import BillingMetrics
from scheduler.queues import DeadLetter
from scheduler.queues.memory import MemoryUsageQueue
from scheduler.result_bus.memory import MemoryResultBus
from schema.jobs import Job, Price, Route, Usage, UsageEvent
from schema.metrics import MetricsRegistry


def job() -> Job:
    return Job(account_id=1, key_id=1, model="mock/echo", routes=[Route(provider="mock", upstream_model="echo")],
               payload={"messages": [{"role": "user", "content": "hi"}]}, deadline=time.time() + 60,
               price=Price(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2)))


def sample(registry: MetricsRegistry, name: str, **labels: str) -> float:
    return registry.exposed.get_sample_value(name, labels) or 0.0


def test_a_batch_counts_each_job_it_charged_once() -> None:
    registry = MetricsRegistry()
    metrics = BillingMetrics(registry)
    charged, duplicate = job(), job()
    event = UsageEvent.of(charged, Usage(input_tokens=10, output_tokens=20))
    # The same job's event twice in one batch, and a job the ledger had charged before.
    batch = [event, event, UsageEvent.of(duplicate, Usage(input_tokens=1000, output_tokens=1000))]
    metrics.settled(batch, [charged.id])
    assert sample(registry, "gatewayz_billing_batch_size_count") == 1
    assert sample(registry, "gatewayz_billing_batch_size_sum") == 3
    assert sample(registry, "gatewayz_settlement_lag_seconds_count") == 1
    labels = {"provider": "mock", "model": "mock/echo"}
    assert sample(registry, "gatewayz_tokens_total", direction="input", **labels) == 10
    assert sample(registry, "gatewayz_tokens_total", direction="output", **labels) == 20
    # 10 tokens at 1 credit and 20 at 2 credits per million: 50 micro-credits.
    assert round(sample(registry, "gatewayz_cost_credits_total", **labels), 9) == 0.00005


def test_registries_do_not_share_counts() -> None:
    first, second = MetricsRegistry(), MetricsRegistry()
    BillingMetrics(first).settled([UsageEvent.of(item := job(), Usage(input_tokens=5))], [item.id])
    BillingMetrics(second)
    assert sample(first, "gatewayz_tokens_total", direction="input", provider="mock", model="mock/echo") == 5
    assert sample(second, "gatewayz_tokens_total", direction="input", provider="mock", model="mock/echo") == 0


async def test_dead_letters_are_counted_by_reason() -> None:
    registry = MetricsRegistry()
    usage = MemoryUsageQueue()
    reader = DeadLetterReader(MemoryResultBus(), usage, metrics=BillingMetrics(registry))
    for reason in ("expired", "expired", "rejected"):
        await reader.read(DeadLetter(job(), reason, "jobs.mock"))
    assert sample(registry, "gatewayz_dead_letters_total", reason="expired") == 2
    assert sample(registry, "gatewayz_dead_letters_total", reason="rejected") == 1
    assert usage.pending() == 3  # each settled at zero, as before
