"""Monitoring's rollups: what a settlement batch adds (once per job, in its
own transaction, summed per minute, provider, model and account, on both
databases), and what is read back from them: error rate, the histogram's
percentiles, the anomaly rule, incidents in an uptime timeline."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from billing.anomalies import judge
from billing.ledger import Ledger
from billing.rollups import COUNTS, latency_bucket, rollup_rows
from billing.uptime import timeline_from
from billing.usage_stats import Totals, totals
from schema.jobs import JobOutcome, Price, Usage, UsageEvent
from schema.tables import LATENCY_BUCKETS

PRICE = Price(input_per_mtok=Decimal("1"), output_per_mtok=Decimal("2"))
MINUTE = 1_800_000_000  # a multiple of 60, far from today: the test does not depend on the clock
ACCOUNT = 7


def event(*, at: float = MINUTE + 5, model: str = "m", account_id: int = ACCOUNT, key_id: int = 1,
          tokens: tuple[int, int] = (10, 20), outcome: JobOutcome | None = None) -> UsageEvent:
    return UsageEvent(job_id=f"job_{uuid.uuid4().hex}", account_id=account_id, key_id=key_id, provider="p",
                      model=model, usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1]), price=PRICE,
                      finished_at=at, outcome=outcome)


@pytest.mark.parametrize(("latency", "bucket"), [
    (0, "latency_le_25"), (26, "latency_le_50"), (250, "latency_le_250"), (251, "latency_le_500"),
    (30000, "latency_le_30000"), (30001, "latency_over")])
def test_a_latency_counts_in_the_first_bucket_it_does_not_exceed(latency: int, bucket: str) -> None:
    assert latency_bucket(latency) == bucket


def test_a_batch_adds_one_row_per_minute_provider_model_and_account() -> None:
    ok = JobOutcome(status=200, latency_ms=300, ttft_ms=100, queue_ms=4)
    failed = JobOutcome(status=502, error_type="upstream_error", latency_ms=40, queue_ms=1)
    rows = rollup_rows([
        (event(model="b", outcome=ok), 50), (event(model="a", outcome=failed, tokens=(0, 0)), 0),
        (event(model="a", outcome=ok), 50), (event(model="a", at=MINUTE + 61), 50),
        (event(model="a", tokens=(0, 0), outcome=JobOutcome(status=429, error_type="rate_limit_error")), 0)])
    assert [(row["minute"], row["model"]) for row in rows] == [(MINUTE, "a"), (MINUTE, "b"), (MINUTE + 60, "a")]
    first = rows[0]
    assert (first["requests"], first["errors"], first["upstream_errors"]) == (3, 2, 1)
    assert (first["input_tokens"], first["output_tokens"], first["cost"]) == (10, 20, 50)
    assert (first["timed"], first["latency_ms"], first["first_tokens"], first["ttft_ms"]) == (2, 340, 1, 100)
    assert (first["latency_le_50"], first["latency_le_500"], first["queue_ms"]) == (1, 1, 5)
    unreported = rows[2]
    assert (unreported["requests"], unreported["errors"], unreported["timed"]) == (1, 0, 0), \
        "an event without its outcome counts as a request, not an error"


def histogram(**counts: int) -> Totals:
    values = dict.fromkeys(("requests", "errors", "timed", *LATENCY_BUCKETS), 0)
    values.update(counts)
    values["timed"] = sum(counts.get(name, 0) for name in LATENCY_BUCKETS)
    return Totals({}, values)


def test_percentiles_interpolate_within_the_histogram_bucket() -> None:
    spread = histogram(latency_le_250=50, latency_le_500=50)
    assert spread.latency_percentile(0.5) == 250.0
    assert spread.latency_percentile(0.75) == 375.0
    assert spread.latency_percentile(0.95) == 475.0
    slowest = histogram(latency_le_250=1, latency_over=99)
    assert slowest.latency_percentile(0.95) == 30000.0, "past the last bound: reported as it"
    assert histogram().latency_percentile(0.5) is None


async def test_settlement_adds_each_job_once(ledger: Ledger) -> None:
    account_id = await ledger.create_account("t", 10_000)  # type: ignore[arg-type]
    key_id = await ledger.create_key(account_id, "t", uuid.uuid4().hex, "gz-t")
    ok = event(account_id=account_id, key_id=key_id, outcome=JobOutcome(latency_ms=120, ttft_ms=30))
    failed = event(account_id=account_id, key_id=key_id, tokens=(0, 0),
                   outcome=JobOutcome(status=504, error_type="timeout"))
    await ledger.settle_many([ok, failed], now=MINUTE + 10)
    await ledger.settle_many([ok, failed], now=MINUTE + 20)  # redelivered: charged before, counted before
    (total,) = await totals(ledger.engine, since=MINUTE, until=MINUTE + 60, where={"account_id": account_id})
    assert (total["requests"], total["errors"], total["upstream_errors"]) == (2, 1, 1)
    assert (total["input_tokens"], total["output_tokens"], total["cost"]) == (10, 20, 10 + 40)
    assert (total.mean_latency_ms, total.mean_ttft_ms, total.error_rate) == (120.0, 30.0, 0.5)
    assert (await ledger.balance(account_id)).available == 10_000 - 50
    assert await totals(ledger.engine, since=MINUTE + 60, where={"account_id": account_id}) == [
        Totals({}, dict.fromkeys(total.counts, 0))], "nothing outside its minute"



def observed(**counts: int) -> Totals:
    return Totals({"provider": "p", "model": "m"}, {**dict.fromkeys(COUNTS, 0), **counts})


def timed(requests: int, mean_ms: int) -> dict[str, int]:
    return {"requests": requests, "timed": requests, "latency_ms": requests * mean_ms}


@pytest.mark.parametrize(("recent", "baseline", "kinds"), [
    ({"requests": 10, "errors": 3}, None, ["error_rate"]),  # 0.3 against nothing
    ({"requests": 10, "errors": 2}, None, []),  # 0.2: under the 0.25 rise
    ({"requests": 10, "errors": 5}, {"requests": 100, "errors": 30}, []),  # 0.5 against 0.3: not 0.25 above
    ({"requests": 10, "errors": 6}, {"requests": 100, "errors": 40}, []),  # 0.6 against 0.4: 0.2 above
    ({"requests": 10, "errors": 7}, {"requests": 100, "errors": 30}, ["error_rate"]),
    ({"requests": 10, "errors": 9}, {"requests": 100, "errors": 50}, []),  # 0.9 against 0.5: not twice
    ({"requests": 4, "errors": 4}, None, []),  # too few to judge
    (timed(5, 1600), timed(5, 500), ["latency"]),
    (timed(5, 1400), timed(5, 500), []),  # 900 ms above, but 2.8 times
    (timed(5, 550), timed(5, 100), []),  # 5.5 times, but 450 ms above
    (timed(5, 1600), timed(4, 500), []),  # too few in the baseline to judge
    (timed(5, 1600), None, []),
])
def test_the_anomaly_rule(recent: dict[str, int], baseline: dict[str, int] | None, kinds: list[str]) -> None:
    found = judge(observed(**recent), observed(**baseline) if baseline is not None else None, min_requests=5)
    assert [anomaly.kind for anomaly in found] == kinds


def test_an_incident_is_a_run_of_buckets_below_the_threshold() -> None:
    def bucket(requests: int, failed: int) -> Totals:
        return Totals({}, {**dict.fromkeys(COUNTS, 0), "requests": requests, "upstream_errors": failed})

    seen = {MINUTE: bucket(10, 0), MINUTE + 60: bucket(10, 5), MINUTE + 120: bucket(10, 10),
            MINUTE + 240: bucket(4, 1), MINUTE + 300: bucket(10, 0)}  # MINUTE + 180: idle, ends the run
    timeline = timeline_from("p", seen, range(MINUTE, MINUTE + 360, 60), 60, threshold=0.95)
    assert [(item.start - MINUTE, item.end - MINUTE, item.requests, item.upstream_errors)
            for item in timeline.incidents] == [(60, 180, 20, 15), (240, 300, 4, 1)]
    assert [row["availability"] for row in timeline.buckets] == [1.0, 0.5, 0.0, None, 0.75, 1.0]
    assert (timeline.requests, timeline.upstream_errors) == (44, 16)
