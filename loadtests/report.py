"""Turning a benchmark run into figures a reader can compare: the markdown
tables, the gateway's added latency, the billing check and the warnings the
processes logged."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.load import LevelResult

LOG_PROBLEM = re.compile(r"\b(ERROR|CRITICAL|WARNING|Traceback)\b")
LOG_LINES_KEPT = 20


@dataclass
class Billing:
    """What the gateway charged for a run, read back from ``GET /user/balance``."""

    target: str
    requests_ok: int
    expected_micros: int
    spent_micros: int
    settled_after_s: float

    @property
    def exact(self) -> bool:
        return self.spent_micros == self.expected_micros


GATEWAYS = ("embedded", "distributed", "litellm")
SERVICES = ("rabbitmq", "redis", "postgres")
# The OTLP sink of a tracing run stands for a collector on another machine: not the gateway's CPU.
NOT_GATEWAY = frozenset({"loadgen", "upstream", "otlp-sink", *SERVICES})
# Issue 11's targets, as (embedded, distributed): throughput as a share of the
# direct call's in the same run, added milliseconds at c=1, CPU ms per request.
GOALS = {
    "json_ratio": (0.3, 0.15),
    "stream_ratio": (0.4, 0.3),
    "added_ms": (1.5, 3.0),
    "cpu_ms": (1.0, 2.5),
}


def added_latency(results: list[LevelResult]) -> list[dict[str, Any]]:
    """The empty round trip: at concurrency 1, gateway p50 minus direct p50."""
    by_cell = {(r.target, r.stream, r.concurrency): r for r in results if r.upstream == "instant"}
    rows = []
    for target in GATEWAYS:
        for stream in (False, True):
            gateway, upstream = by_cell.get((target, stream, 1)), by_cell.get(("direct", stream, 1))
            if gateway is None or upstream is None or gateway.p50_ms is None or upstream.p50_ms is None:
                continue
            row: dict[str, Any] = {
                "target": target,
                "stream": stream,
                "gateway_p50_ms": gateway.p50_ms,
                "direct_p50_ms": upstream.p50_ms,
                "added_ms": round(gateway.p50_ms - upstream.p50_ms, 2),
            }
            if stream and gateway.ttft_p50_ms is not None and upstream.ttft_p50_ms is not None:
                row["added_ttft_ms"] = round(gateway.ttft_p50_ms - upstream.ttft_p50_ms, 2)
            rows.append(row)
    return rows


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def mode(result: LevelResult) -> str:
    if not result.stream:
        return "json"
    return "stream" if result.upstream == "instant" else f"stream, upstream {result.upstream}"


def _direct(results: list[LevelResult]) -> dict[tuple[bool, int, str], LevelResult]:
    return {(r.stream, r.concurrency, r.upstream): r for r in results if r.target == "direct"}


def ratio(result: LevelResult, direct: dict[tuple[bool, int, str], LevelResult]) -> float | None:
    """Throughput as a share of the direct call's at the same level."""
    base = direct.get((result.stream, result.concurrency, result.upstream))
    if base is None or not base.requests_per_s:
        return None
    return result.requests_per_s / base.requests_per_s


def results_table(results: list[LevelResult]) -> list[str]:
    direct = _direct(results)
    lines = [
        "| target | mode | conc | ok/sent | req/s | × direct | p50 ms | p99 ms | TTFT p50 ms | TTFT p99 ms | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in results:
        errors = ", ".join(f"{name}: {count}" for name, count in sorted(r.errors.items())) or "-"
        share = ratio(r, direct)
        lines.append(
            f"| {r.target} | {mode(r)} | {r.concurrency} | {r.ok}/{r.started} | {r.requests_per_s:.1f} "
            f"| {'-' if share is None else f'{share:.2f}'} "
            f"| {_figure(r.p50_ms)} | {_figure(r.p99_ms)} | {_figure(r.ttft_p50_ms)} | {_figure(r.ttft_p99_ms)} "
            f"| {errors} |"
        )
    return lines


def added_table(added: list[dict[str, Any]]) -> list[str]:
    lines = [
        "Empty round trip (concurrency 1): what the gateway adds to the p50 of a direct call.",
        "",
        "| target | mode | gateway p50 ms | direct p50 ms | added ms | added TTFT ms |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for row in added:
        lines.append(
            f"| {row['target']} | {'stream' if row['stream'] else 'json'} | {row['gateway_p50_ms']:.1f} "
            f"| {row['direct_p50_ms']:.1f} | {row['added_ms']:.1f} | {_figure(row.get('added_ttft_ms'))} |"
        )
    return lines


def cpu_split(result: LevelResult) -> dict[str, float]:
    """CPU ms per successful request: ``gateway`` (every gateway process
    summed), each service, the load generator and the upstream."""
    per_request = {name: seconds * 1000 / result.ok for name, seconds in result.cpu_s.items()}
    split = {"gateway": sum(value for name, value in per_request.items() if name not in NOT_GATEWAY)}
    return split | {name: value for name, value in per_request.items() if name in NOT_GATEWAY}


def cpu_table(results: list[LevelResult]) -> list[str]:
    """CPU milliseconds per successful request at every level: the gateway's
    processes summed (and each), the services it runs on, and the rest."""
    lines = [
        "CPU per request (ms of CPU per successful request). `gateway` sums every gateway process; "
        "`req per core-s` is requests per second of gateway CPU, what one core would serve.",
        "",
        "| target | mode | conc | req/s | gateway | gateway processes | RabbitMQ | Redis | PostgreSQL "
        "| loadgen | upstream | req per core-s |",
        "|---|---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        if not r.ok or not r.cpu_s:
            continue
        split = cpu_split(r)
        processes = ", ".join(f"{name} {seconds * 1000 / r.ok:.2f}" for name, seconds in r.cpu_s.items()
                              if name not in NOT_GATEWAY) or "-"
        services = " | ".join(_figure2(split.get(name)) for name in SERVICES)
        per_core = f"{1000 / split['gateway']:.0f}" if split["gateway"] > 0 else "-"
        lines.append(
            f"| {r.target} | {mode(r)} | {r.concurrency} | {r.requests_per_s:.1f} | {split['gateway']:.2f} "
            f"| {processes} | {services} | {_figure2(split.get('loadgen'))} | {_figure2(split.get('upstream'))} "
            f"| {per_core if r.target != 'direct' else '-'} |"
        )
    return lines


def _figure2(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def goals_table(results: list[LevelResult]) -> list[str]:
    """The issue's targets, embedded and distributed, against this run."""
    direct = _direct(results)
    added = {(row["target"], row["stream"]): row for row in added_latency(results)}
    top = {target: max((r.concurrency for r in results if r.target == target and r.upstream == "instant"),
                       default=0) for target in ("embedded", "distributed")}
    cells = {(r.target, r.stream, r.concurrency): r for r in results if r.upstream == "instant"}
    lines = ["Issue 11's targets (ratios to the direct call in this run):", "",
             "| target | JSON c={c} × direct | stream c={c} × direct | added p50 JSON c=1 ms | added TTFT c=1 ms "
             "| CPU ms per JSON request (c={c}) |".replace("{c}", str(max(top.values(), default=0))),
             "|---|--:|--:|--:|--:|--:|"]
    for index, target in enumerate(("embedded", "distributed")):
        json_cell, stream_cell = cells.get((target, False, top[target])), cells.get((target, True, top[target]))
        json_share = ratio(json_cell, direct) if json_cell else None
        stream_share = ratio(stream_cell, direct) if stream_cell else None
        cpu = cpu_split(json_cell)["gateway"] if json_cell and json_cell.ok and json_cell.cpu_s else None
        row = added.get((target, False), {})
        ttft = added.get((target, True), {}).get("added_ttft_ms")
        if json_cell is None and stream_cell is None:
            continue
        lines.append(
            f"| {target} | {_goal(json_share, GOALS['json_ratio'][index], at_least=True)} "
            f"| {_goal(stream_share, GOALS['stream_ratio'][index], at_least=True)} "
            f"| {_goal(row.get('added_ms'), GOALS['added_ms'][index])} | {_goal(ttft, GOALS['added_ms'][index])} "
            f"| {_goal(cpu, GOALS['cpu_ms'][index])} |")
    return lines


def _goal(value: float | None, goal: float, *, at_least: bool = False) -> str:
    if value is None:
        return "-"
    met = value >= goal if at_least else value <= goal
    return f"{value:.2f} ({'≥' if at_least else '≤'} {goal:g}: {'met' if met else 'missed'})"


def billing_table(billing: list[Billing]) -> list[str]:
    lines = [
        "Billing: micro-credits charged for the run (warm-up included) against the catalog prices.",
        "",
        "| target | successful requests | expected | charged | exact | settled after s |",
        "|---|--:|--:|--:|---|--:|",
    ]
    for bill in billing:
        lines.append(
            f"| {bill.target} | {bill.requests_ok} | {bill.expected_micros} | {bill.spent_micros} "
            f"| {'yes' if bill.exact else 'NO'} | {bill.settled_after_s:.2f} |"
        )
    return lines


def markdown(results: list[LevelResult], billing: list[Billing]) -> str:
    sections = [results_table(results)]
    added = added_latency(results)
    if added:
        sections.append(added_table(added))
    if any(r.cpu_s for r in results):
        sections.append(cpu_table(results))
    if any(r.target == "direct" for r in results) and any(r.target in ("embedded", "distributed") for r in results):
        sections.append(goals_table(results))
    if billing:
        sections.append(billing_table(billing))
    return "\n\n".join("\n".join(section) for section in sections)


def log_problems(logs: Path) -> dict[str, list[str]]:
    """Warning, error and traceback lines per process log (the first few of each)."""
    found: dict[str, list[str]] = {}
    for log in sorted(logs.glob("*.log")):
        lines = [line for line in log.read_text(errors="replace").splitlines() if LOG_PROBLEM.search(line)]
        if lines:
            more = len(lines) - LOG_LINES_KEPT
            found[log.stem] = lines[:LOG_LINES_KEPT] + ([f"… {more} more"] if more > 0 else [])
    return found
