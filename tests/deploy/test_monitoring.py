"""``deploy/prometheus`` and ``deploy/grafana`` against the agreed metrics,
the scrape jobs and ``docs/operations.md``.

Every expression (alert rules, dashboard panels and variables) uses only the
agreed metric names (``metrics.py``) with labels they have; every job an
alert names is scraped, with the same name in compose and in Kubernetes;
every alert has a runbook section; every agreed metric has a dashboard panel. The last test proves each check notices
a broken file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.deploy.breakage import assert_noticed
from tests.deploy.manifests import ROOT, Resource, load_resources, of_kind
from tests.deploy.metrics import AGREED, jobs_selected, promql_problems, series

PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
OPERATIONS = ROOT / "docs" / "operations.md"
SEVERITIES = {"warning", "critical"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")

Files = dict[str, Any]


def load_files() -> Files:
    return {
        "compose": yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text()),
        "kubernetes": yaml.safe_load((PROMETHEUS / "prometheus-kubernetes.yml").read_text()),
        "alerts": yaml.safe_load((PROMETHEUS / "alerts.yml").read_text()),
        "dashboard": json.loads((GRAFANA / "dashboards" / "gatewayz.json").read_text()),
        "datasources": yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()),
        "runbook": OPERATIONS.read_text(),
        "k8s": load_resources(),
    }


def rules(files: Files) -> Iterator[dict[str, Any]]:
    for group in files["alerts"]["groups"]:
        yield from group["rules"]


def compose_jobs(files: Files) -> set[str]:
    return {job["job_name"] for job in files["compose"]["scrape_configs"]}


def kubernetes_jobs(files: Files) -> set[str]:
    """The job names prometheus-kubernetes.yml gives the annotated pods of
    deploy/k8s: its relabelling, applied to each pod's labels."""
    jobs = set()
    for config in files["kubernetes"]["scrape_configs"]:
        for deployment in of_kind(files["k8s"], "Deployment").values():
            job = _relabel(config, deployment["spec"]["template"]["metadata"])
            if job is not None:
                jobs.add(job)
    return jobs


def _relabel(config: dict[str, Any], pod: Resource) -> str | None:
    """The job label Prometheus's relabelling gives a pod; None if dropped.
    Only what the file uses: keep, and replace from pod labels and annotations."""
    meta = {f"__meta_kubernetes_pod_label_{_sanitized(k)}": v for k, v in (pod.get("labels") or {}).items()}
    meta |= {f"__meta_kubernetes_pod_annotation_{_sanitized(k)}": v for k, v in (pod.get("annotations") or {}).items()}
    meta |= {"__meta_kubernetes_pod_phase": "Running", "job": config["job_name"]}
    for rule in config.get("relabel_configs") or []:
        value = ";".join(meta.get(label, "") for label in rule.get("source_labels") or [])
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        if rule.get("action", "replace") == "keep":
            if match is None:
                return None
        elif match is not None and "target_label" in rule:
            meta[rule["target_label"]] = match.expand(rule.get("replacement", "$1").replace("$", "\\"))
    return meta["job"]


def _sanitized(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels") or []:
        yield panel
        yield from panel.get("panels") or []  # a collapsed row keeps its panels


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in markdown.splitlines() if line.startswith("#")}


# the checks


def alert_problems(files: Files) -> list[str]:
    problems = []
    names = [rule.get("alert") for rule in rules(files)]
    problems += [f"alert {name} is defined twice" for name in sorted({n for n in names if names.count(n) > 1})]
    anchors = _anchors(files["runbook"])
    for rule in rules(files):
        name = rule.get("alert")
        problems += [f"{name}: {problem}" for problem in promql_problems(str(rule.get("expr", "")))]
        if (rule.get("labels") or {}).get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity must be one of {sorted(SEVERITIES)}")
        if "for" in rule and not DURATION.match(str(rule["for"])):
            problems.append(f"{name}: `for: {rule['for']}` is not a duration")
        annotations = rule.get("annotations") or {}
        if not annotations.get("summary") or not annotations.get("description"):
            problems.append(f"{name}: needs a summary and a description")
        if annotations.get("runbook_url") != f"docs/operations.md#{str(name).lower()}":
            problems.append(f"{name}: runbook_url must be docs/operations.md#{str(name).lower()}")
        elif str(name).lower() not in anchors:
            problems.append(f"{name}: docs/operations.md has no section {name}")
    return problems


def job_problems(files: Files) -> list[str]:
    """The alerts' jobs exist, named alike in compose and in Kubernetes."""
    problems = []
    compose, kubernetes = compose_jobs(files), kubernetes_jobs(files)
    if compose != kubernetes:
        problems.append(f"compose scrapes jobs {sorted(compose)}, Kubernetes {sorted(kubernetes)}")
    for rule in rules(files):
        problems += [f"{rule.get('alert')}: job {job!r} is not scraped"
                     for job in sorted(jobs_selected(str(rule.get("expr", ""))) - (compose & kubernetes))]
    for name, config in (("compose", files["compose"]), ("kubernetes", files["kubernetes"])):
        if config.get("rule_files") != ["/etc/prometheus/alerts.yml"]:
            problems.append(f"the {name} config does not load /etc/prometheus/alerts.yml")
    return problems


def dashboard_problems(files: Files) -> list[str]:
    problems = []
    dashboard = files["dashboard"]
    sources = {source["uid"] for source in files["datasources"]["datasources"]}
    ids = [panel.get("id") for panel in dashboard_panels(dashboard)]
    if len(ids) != len(set(ids)):
        problems.append("panel ids repeat")
    variables = dashboard.get("templating", {}).get("list") or []
    charted: set[str | None] = set()
    for item in [*dashboard_panels(dashboard), *variables]:
        title = item.get("title") or item.get("name")
        if item.get("type") == "row":
            continue
        if (item.get("datasource") or {}).get("uid") not in sources:
            problems.append(f"{title}: its datasource is not the provisioned one")
        queries = [target.get("expr", "") for target in item.get("targets") or []]
        if item.get("type") == "query":
            queries.append((item.get("query") or {}).get("query", ""))
        if item.get("type") != "query" and not queries:
            problems.append(f"{title}: no query")
        problems += [f"{title}: {problem}" for query in queries for problem in promql_problems(query)]
        charted |= {item.family for query in queries for item in series(query)}
    problems += [f"no panel shows {name}" for name in sorted(set(AGREED) - charted)]
    return problems


def test_alert_rules_use_agreed_metrics_and_have_runbooks() -> None:
    assert alert_problems(load_files()) == []


def test_alerts_name_jobs_scraped_alike_in_compose_and_kubernetes() -> None:
    assert job_problems(load_files()) == []


def test_dashboard_uses_agreed_metrics_and_the_provisioned_datasource() -> None:
    assert dashboard_problems(load_files()) == []


# the checks notice a broken file


def _alert(files: Files, name: str) -> dict[str, Any]:
    return next(rule for rule in rules(files) if rule["alert"] == name)


def _set_expr(name: str, expr: str) -> Callable[[Files], None]:
    def change(files: Files) -> None:
        _alert(files, name)["expr"] = expr
    return change


def _panel(files: Files, title: str) -> dict[str, Any]:
    return next(panel for panel in dashboard_panels(files["dashboard"]) if panel.get("title") == title)


BREAKAGES: dict[str, tuple[Callable[[Files], list[str]], Callable[[Files], None]]] = {
    "unknown metric": (alert_problems, _set_expr("GatewayzCircuitOpen", "max(gatewayz_circuit_status) == 2")),
    "label the metric lacks": (alert_problems, _set_expr("GatewayzPoolNoConsumers",
                                                         "max by (provider) (gatewayz_pool_consumers) == 0")),
    "matcher on a label the metric lacks": (alert_problems, _set_expr(
        "GatewayzPoolNoConsumers", 'max by (pool) (gatewayz_pool_consumers{provider="openai"}) == 0')),
    "histogram read as one series": (alert_problems, _set_expr(
        "GatewayzSettlementLagHigh", "rate(gatewayz_settlement_lag_seconds[5m]) > 30")),
    "priority that is none": (alert_problems, _set_expr(
        "GatewayzEstimatedWaitHigh", 'max by (pool) (gatewayz_estimated_wait_seconds{priority="interactive"}) > 5')),
    "no runbook section": (alert_problems, lambda f: f.update(runbook=f["runbook"].replace(
        "### GatewayzDeadLetters", "### Dead letters"))),
    "no severity": (alert_problems, lambda f: _alert(f, "GatewayzDeadLetters")["labels"].clear()),
    "job not scraped": (job_problems, _set_expr("GatewayzTargetDown", 'up{job="gatewayz-workers"} == 0')),
    "jobs named apart": (job_problems, lambda f: f["kubernetes"]["scrape_configs"][0]["relabel_configs"][-3].update(
        replacement="gz-$1")),
    "rules not loaded": (job_problems, lambda f: f["compose"].pop("rule_files")),
    "panel with an unknown metric": (dashboard_problems, lambda f: _panel(f, "Consumers")["targets"][0].update(
        expr="max by (pool) (gatewayz_consumers)")),
    "metric on no panel": (dashboard_problems, lambda f: f["dashboard"]["panels"].remove(_panel(f, "Credits held"))),
    "panel on another datasource": (dashboard_problems, lambda f: _panel(f, "Consumers")["datasource"].update(
        uid="other")),
    "variable on an unknown metric": (dashboard_problems, lambda f: f["dashboard"]["templating"]["list"][0].update(
        query={"query": "label_values(gatewayz_depth, pool)"})),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_each_check_notices_a_broken_file(breakage: str) -> None:
    check, change = BREAKAGES[breakage]
    assert_noticed(check, load_files(), change)
