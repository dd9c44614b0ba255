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


def added_latency(results: list[LevelResult]) -> list[dict[str, Any]]:
    """The empty round trip: at concurrency 1, gateway p50 minus direct p50."""
    by_cell = {(r.target, r.stream, r.concurrency): r for r in results}
    rows = []
    for target in ("embedded", "distributed"):
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


def _mode(stream: bool) -> str:
    return "stream" if stream else "json"


def results_table(results: list[LevelResult]) -> list[str]:
    lines = [
        "| target | mode | conc | ok/sent | req/s | p50 ms | p99 ms | TTFT p50 ms | TTFT p99 ms | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in results:
        errors = ", ".join(f"{name}: {count}" for name, count in sorted(r.errors.items())) or "-"
        lines.append(
            f"| {r.target} | {_mode(r.stream)} | {r.concurrency} | {r.ok}/{r.started} | {r.requests_per_s:.1f} "
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
            f"| {row['target']} | {_mode(row['stream'])} | {row['gateway_p50_ms']:.1f} | {row['direct_p50_ms']:.1f} "
            f"| {row['added_ms']:.1f} | {_figure(row.get('added_ttft_ms'))} |"
        )
    return lines


def cpu_table(results: list[LevelResult]) -> list[str]:
    """CPU milliseconds per successful request, per process, at each target's
    highest concurrency: who the cores worked for when they were busiest."""
    top = max((r.concurrency for r in results), default=0)
    lines = [
        f"CPU per request at concurrency {top} (ms of CPU per successful request, by process).",
        "",
        "| target | mode | req/s | CPU ms per request | total |",
        "|---|---|--:|---|--:|",
    ]
    for r in results:
        if r.concurrency != top or not r.ok or not r.cpu_s:
            continue
        per_request = {name: seconds * 1000 / r.ok for name, seconds in r.cpu_s.items()}
        spent = ", ".join(f"{name} {value:.2f}" for name, value in per_request.items())
        lines.append(
            f"| {r.target} | {_mode(r.stream)} | {r.requests_per_s:.1f} | {spent} | {sum(per_request.values()):.2f} |"
        )
    return lines


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
