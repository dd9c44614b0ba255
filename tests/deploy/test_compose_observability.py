"""``compose.yaml``'s ``observability`` profile against the files it
mounts and the roles it watches: Prometheus scrapes every process of every
role on the port its metrics are on and loads the alert rules; Grafana's
datasource is that Prometheus and its dashboards are mounted where it reads
them; the roles' OTEL_* variables are OpenTelemetry's and the endpoint the
file documents is the collector's. The last test proves each check notices
a broken file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.breakage import assert_noticed
from tests.test_compose import (
    COMPOSE,
    CommandError,
    command_of,
    environment,
    gateway_services,
    host_path,
    load_compose,
    parse_command,
    setting,
)

PROFILE = "observability"
SERVICES = ("prometheus", "grafana", "otel-collector")
BASE = COMPOSE.parent
# The OpenTelemetry SDK's own variables the gateway's roles may be given.
OTEL_VARIABLES = frozenset({
    "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_EXPORTER",
    "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_PROPAGATORS",
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_COMPRESSION",
})
PROMETHEUS_PORT = 9090  # where the prom/prometheus image listens


def _mounted_yaml(service: dict[str, Any], path: str) -> Any:
    found = host_path(service, path, BASE)
    return None if found is None or not found.is_file() else yaml.safe_load(found.read_text())


def _metrics_ports(compose: dict[str, Any]) -> dict[str, str | None]:
    """Service -> the port its /metrics is on (None: it serves none); one-shots left out."""
    ports: dict[str, str | None] = {}
    for name, service in gateway_services(compose).items():
        try:
            invocation = parse_command(command_of(service))
        except CommandError:
            continue
        if invocation.path == ("ingress",):
            ports[name] = str(invocation.params["port"])
        elif invocation.path in (("worker",), ("billing",), ("orchestrator",), ("prober",)):
            ports[name] = setting(service, "metrics_port")
    return ports


def profile_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    services = compose.get("services") or {}
    for name in SERVICES:
        if name not in services:
            problems.append(f"no {name} service")
        elif services[name].get("profiles") != [PROFILE]:
            problems.append(f"{name}: must run only under the {PROFILE} profile")
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")) and not (BASE / source).exists():
                problems.append(f"{name}: mounts {source}, which is not in the repository")
    return problems


def scrape_problems(compose: dict[str, Any]) -> list[str]:
    prometheus = (compose.get("services") or {}).get("prometheus") or {}
    config = _mounted_yaml(prometheus, "/etc/prometheus/prometheus.yml")
    if config is None:
        return ["prometheus: /etc/prometheus/prometheus.yml is not mounted from the repository"]
    problems = [f"prometheus: rule file {path} is not mounted" for path in config.get("rule_files") or []
                if _mounted_yaml(prometheus, path) is None]
    targets: set[tuple[str, str]] = set()
    for job in config.get("scrape_configs") or []:
        for found in job.get("dns_sd_configs") or []:
            targets |= {(name, str(found.get("port"))) for name in found.get("names") or []}
        for static in job.get("static_configs") or []:
            targets |= {tuple(target.rsplit(":", 1)) for target in static.get("targets") or []}  # type: ignore[misc]
    ports = _metrics_ports(compose)
    for name, port in sorted(ports.items()):
        if port is None:
            problems.append(f"{name}: serves no metrics (set GATEWAYZ_METRICS_PORT)")
        elif (name, port) not in targets:
            problems.append(f"{name}: its metrics on port {port} are not scraped")
    problems += [f"prometheus scrapes {name}:{port}, which is no role's metrics port"
                 for name, port in sorted(targets) if ports.get(name) != port]
    return problems


def grafana_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    grafana = (compose.get("services") or {}).get("grafana") or {}
    sources = _mounted_yaml(grafana, "/etc/grafana/provisioning/datasources/prometheus.yml") or {}
    for source in sources.get("datasources") or []:
        url = urlsplit(source.get("url", ""))
        if (url.hostname, url.port) != ("prometheus", PROMETHEUS_PORT):
            problems.append(f"grafana: datasource {source.get('name')} points at {source.get('url')}")
    if not sources:
        problems.append("grafana: no datasource is provisioned")
    boards = _mounted_yaml(grafana, "/etc/grafana/provisioning/dashboards/gatewayz.yml") or {}
    for provider in boards.get("providers") or [{}]:
        folder = host_path(grafana, (provider.get("options") or {}).get("path", "/nowhere"), BASE)
        if folder is None or not list(Path(folder).glob("*.json")):
            problems.append("grafana: the dashboards' folder is not mounted where it reads them")
    return problems


def tracing_problems(compose: dict[str, Any], text: str) -> list[str]:
    problems = [f"{name}: {variable} is not an OpenTelemetry variable"
                for name, service in gateway_services(compose).items() for variable in environment(service)
                if variable.startswith("OTEL_") and variable not in OTEL_VARIABLES]
    collector = _mounted_yaml((compose.get("services") or {}).get("otel-collector") or {},
                              "/etc/otelcol/config.yaml") or {}
    http = (((collector.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}).get("http") or {}
    listening = str(http.get("endpoint", "")).rsplit(":", 1)[-1]
    for endpoint in re.findall(r"OTEL_EXPORTER_OTLP_ENDPOINT=(\S+)", text):
        url = urlsplit(endpoint)
        if url.hostname != "otel-collector" or str(url.port) != listening:
            problems.append(f"the documented endpoint {endpoint} is not the collector's OTLP/HTTP receiver")
    if not listening:
        problems.append("otel-collector: its config has no OTLP/HTTP receiver")
    return problems


CHECKS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "the profile's services and mounts": profile_problems,
    "every role's metrics are scraped": scrape_problems,
    "grafana reads Prometheus and the dashboards": grafana_problems,
    "tracing variables and endpoint": lambda compose: tracing_problems(compose, COMPOSE.read_text()),
}


@pytest.mark.parametrize("check", CHECKS)
def test_the_observability_profile_holds(check: str) -> None:
    assert CHECKS[check](load_compose()) == []


def _service(name: str, edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(compose: dict[str, Any]) -> None:
        edit(compose["services"][name])
    return change


BREAKAGES: dict[str, tuple[str, Callable[[dict[str, Any]], None]]] = {
    "always on": ("the profile's services and mounts", _service("grafana", lambda s: s.pop("profiles"))),
    "mount of a missing file": ("the profile's services and mounts", _service(
        "prometheus", lambda s: s["volumes"].append("./deploy/prometheus/rules.yml:/etc/prometheus/rules.yml:ro"))),
    "no metrics port": ("every role's metrics are scraped", _service(
        "billing", lambda s: s.update(environment={k: v for k, v in s["environment"].items() if "METRICS" not in k}))),
    "pool not scraped": ("every role's metrics are scraped", lambda c: c["services"].update(
        {"worker-acme": {**c["services"]["worker-mock"], "command": ["worker", "--provider", "acme"]}})),
    "config not mounted": ("every role's metrics are scraped", _service("prometheus", lambda s: s.update(volumes=[]))),
    "dashboards elsewhere": ("grafana reads Prometheus and the dashboards", _service(
        "grafana", lambda s: s["volumes"].pop())),
    "unknown OTEL variable": ("tracing variables and endpoint", _service(
        "ingress", lambda s: s.update(environment={**s["environment"], "OTEL_ENDPOINT": "x"}))),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_each_check_notices_a_broken_file(breakage: str) -> None:
    check, change = BREAKAGES[breakage]
    assert_noticed(CHECKS[check], load_compose(), change)


def test_a_documented_endpoint_off_the_collector_is_noticed() -> None:
    text = COMPOSE.read_text().replace("http://otel-collector:4318", "http://otel-collector:4317")
    assert tracing_problems(load_compose(), text) != []
