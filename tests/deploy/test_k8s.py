"""``deploy/k8s`` against the Kubernetes API and the code it deploys.

Every resource validates against the Kubernetes schemas (kubernetes-validate,
offline) or, for KEDA's, against their structure (``keda.py``); every
container runs a real ``gatewayz`` command with real settings and the
providers its mounted config defines; shutdown budgets cover the drain; each
worker pool scales on its own queue. No cluster is needed: the files are only
read. As in ``tests/test_compose.py``, the checks return the problems they
find, and the last test proves that each notices a broken file.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from scheduler.priority import Work
from scheduler.topology import Topology
from schema.catalog import ConfigError, GatewayConfig, load_config
from schema.settings import Settings
from tests.deploy import keda
from tests.deploy.breakage import assert_noticed
from tests.deploy.manifests import K8S, Container, Resource, containers, load_kustomization, load_resources, of_kind
from tests.test_compose import ROLE_USES, SHARED, CommandError, is_setting, parse_command, shutdown_budget

# The oldest Kubernetes these manifests are meant for, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
IMAGE = "gatewayz"  # the image name kustomization.yaml's `images` rewrites
# Seconds a pod needs after its drain budget to close its connections, at least and at most.
CLOSE_MARGIN = (5, 30)


def _role(container: Container) -> tuple[str, ...]:
    try:
        return parse_command(container.args).path
    except CommandError:
        return ()  # command_problems reports it


def _deployments(resources: list[Resource]) -> dict[str, Resource]:
    return of_kind(resources, "Deployment")


def _labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = selector.get("matchLabels", selector)
    return bool(wanted) and all(labels.get(key) == value for key, value in wanted.items())


# the checks


def file_problems(base: Path = K8S) -> list[str]:
    listed = {(base / name).resolve() for name in load_kustomization(base).get("resources") or []}
    present = {path.resolve() for path in base.rglob("*.yaml") if path.name != "kustomization.yaml"}
    return ([f"{path.relative_to(base)} is not listed in kustomization.yaml" for path in sorted(present - listed)]
            + [f"{path} is listed but missing" for path in sorted(listed - present)])


def schema_problems(resources: list[Resource]) -> list[str]:
    problems = []
    for resource in resources:
        name = f"{resource.get('kind')} {resource.get('metadata', {}).get('name')}"
        structure = keda.SCHEMAS.get((resource.get("apiVersion"), resource.get("kind")))
        if structure is not None:
            problems += [f"{name}: {error.json_path}: {error.message}"
                         for error in jsonschema.Draft202012Validator(structure).iter_errors(resource)]
            resource = _hpa_of(resource) if resource["kind"] == "ScaledObject" else {}
            if not resource:
                continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                problems.append(f"{name} (Kubernetes {version}): {error.message}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{name}: {resource.get('apiVersion')} is not in Kubernetes {version}")
    return problems


def _hpa_of(scaled: Resource) -> Resource:
    """The HorizontalPodAutoscaler KEDA makes of a ScaledObject, so that its
    ``behavior`` meets the Kubernetes schema it is copied into."""
    spec = scaled.get("spec") or {}
    config = (spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": f"keda-hpa-{scaled['metadata']['name']}"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": (spec.get("scaleTargetRef") or {}).get("name", "")},
                    "minReplicas": max(1, spec.get("minReplicaCount", 1)),
                    "maxReplicas": spec.get("maxReplicaCount", 100)}}
    if "behavior" in config:
        hpa["spec"]["behavior"] = config["behavior"]
    return hpa


def command_problems(resources: list[Resource]) -> list[str]:
    problems = []
    for container in containers(resources):
        if "command" in container.spec:
            problems.append(f"{container.workload}: `command` replaces the image's `gatewayz` entrypoint")
        if str(container.spec.get("image")).split(":")[0] != IMAGE:
            problems.append(f"{container.workload}: image {container.spec.get('image')!r} is not {IMAGE!r}")
        try:
            parse_command(container.args)
        except CommandError as error:
            problems.append(f"{container.workload}: {error}")
    return problems


def settings_problems(resources: list[Resource]) -> list[str]:
    problems = []
    for container in containers(resources):
        problems += container.problems
        problems += [f"{container.workload}: {variable} is not a setting"
                     for variable in container.env if variable.startswith("GATEWAYZ_") and not is_setting(variable)]
        for used in ROLE_USES.get(_role(container), ()):
            if not container.env.get(f"GATEWAYZ_{used.upper()}"):
                problems.append(f"{container.workload}: `{' '.join(_role(container))}` needs GATEWAYZ_{used.upper()}")
    for variable in SHARED:
        values = {container.env.get(f"GATEWAYZ_{variable.upper()}") for container in containers(resources)} - {None}
        if len(values) > 1:
            problems.append(f"GATEWAYZ_{variable.upper()} differs between roles")
    return problems


def _config(container: Container, resources: list[Resource]) -> GatewayConfig:
    invocation = parse_command(container.args)
    chosen = invocation.params.get("config_path") or container.env.get("GATEWAYZ_CONFIG")
    credits_per_usd = Decimal(container.env.get("GATEWAYZ_CREDITS_PER_USD")
                              or Settings.model_fields["credits_per_usd"].default)
    if not chosen:
        return load_config(None, {}, credits_per_usd=credits_per_usd)
    text = container.mounted_file(str(chosen), resources)
    if text is None:
        raise ConfigError(f"{chosen} is not mounted from a ConfigMap")
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "gatewayz.toml"
        path.write_text(text)
        return load_config(path, {}, credits_per_usd=credits_per_usd)


def provider_problems(resources: list[Resource]) -> list[str]:
    problems = []
    served: set[str] = set()
    known: set[str] = set()
    for container in containers(resources):
        role = _role(container)
        if role not in (("worker",), ("ingress",), ("prober",)):
            continue
        try:
            config = _config(container, resources)
        except ConfigError as error:
            problems.append(f"{container.workload}: {error}")
            continue
        known |= set(config.providers)
        # A pool calls its own provider; the ingress (model lists) and the prober call every one.
        calls = [parse_command(container.args).params["provider"]] if role == ("worker",) else sorted(config.providers)
        for provider in calls:
            if provider not in config.providers:
                problems.append(f"{container.workload}: provider {provider!r} is not in its config")
                continue
            key = config.providers[provider].api_key_env
            if key and key not in container.env:
                problems.append(f"{container.workload}: {provider}'s key {key} is not in its environment")
        if role == ("worker",):
            served |= set(calls)
    problems += [f"provider {provider!r} has no worker Deployment: its jobs would wait forever"
                 for provider in sorted(known - served)]
    return problems


def _pre_stop_seconds(container: Container) -> float | None:
    """How long the preStop hook delays SIGTERM; None if that cannot be known."""
    hook = (container.spec.get("lifecycle") or {}).get("preStop")
    if not hook:
        return 0
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    command = (hook.get("exec") or {}).get("command") or []
    if len(command) == 2 and command[0] == "sleep":
        return float(command[1])
    return None


def drain_problems(resources: list[Resource]) -> list[str]:
    """A pod is killed ``terminationGracePeriodSeconds`` after its preStop
    starts: the preStop, then the role's drain after SIGTERM, then closing
    must fit, with no long wait beyond them."""
    problems = []
    for container in containers(resources):
        role = _role(container)
        drain = shutdown_budget(role, container.env)
        if drain is None:
            continue
        pre_stop = _pre_stop_seconds(container)
        if pre_stop is None:
            problems.append(f"{container.workload}: its preStop hook's length cannot be known")
            continue
        if role == ("worker",) and pre_stop:
            problems.append(f"{container.workload}: a preStop delays SIGTERM, and the worker takes jobs meanwhile")
        grace = container.pod.get("terminationGracePeriodSeconds", 30)
        margin = grace - pre_stop - drain
        if not CLOSE_MARGIN[0] <= margin <= CLOSE_MARGIN[1]:
            problems.append(f"{container.workload}: terminationGracePeriodSeconds {grace} leaves {margin:g} s after "
                            f"preStop {pre_stop:g} s and drain {drain:g} s (want {CLOSE_MARGIN[0]}–{CLOSE_MARGIN[1]})")
    return problems


def autoscaling_problems(resources: list[Resource]) -> list[str]:
    problems = []
    deployments = _deployments(resources)
    auths = of_kind(resources, "TriggerAuthentication")
    secrets = {name: secret.get("stringData") or {} for name, secret in of_kind(resources, "Secret").items()}
    workers = {container.workload: container for container in containers(resources) if _role(container) == ("worker",)}
    scaled: dict[str, int] = {}
    for name, scaler in of_kind(resources, "ScaledObject").items():
        target = scaler["spec"]["scaleTargetRef"]["name"]
        scaled[target] = scaled.get(target, 0) + 1
        if target not in workers:
            problems.append(f"ScaledObject {name}: {target!r} is no worker Deployment")
            continue
        worker = workers[target]
        if scaler["spec"].get("minReplicaCount", 0) < 1:
            problems.append(f"ScaledObject {name}: a pool with no worker gets 503s, so it cannot wake on its queue")
        # Interactive work scales a pool: its realtime and standard queues (not its low one, which only
        # fills the pods there are).
        topology = Topology(worker.env.get("GATEWAYZ_NAMESPACE", Settings.model_fields["namespace"].default))
        provider = parse_command(worker.args).params["provider"]
        queues = {topology.job_queue(provider, work) for work in (Work.REALTIME, Work.STANDARD)}
        watched = {trigger["metadata"].get("queueName") for trigger in scaler["spec"]["triggers"]}
        if watched != queues:
            problems.append(f"ScaledObject {name}: watches {sorted(map(str, watched))}, "
                            f"its pool's interactive queues are {sorted(queues)}")
        for trigger in scaler["spec"]["triggers"]:
            auth = auths.get((trigger.get("authenticationRef") or {}).get("name", ""))
            hosts = [secrets.get(ref["name"], {}).get(ref["key"])
                     for ref in ((auth or {}).get("spec") or {}).get("secretTargetRef") or []
                     if ref["parameter"] == "host"]
            if hosts != [worker.env.get("GATEWAYZ_BROKER_URL")]:
                problems.append(f"ScaledObject {name}: its authentication does not give KEDA the pool's broker URL")
    for name in workers:
        if scaled.get(name, 0) != 1:
            problems.append(f"worker Deployment {name}: {scaled.get(name, 0)} ScaledObjects (want one)")
    for name, hpa in of_kind(resources, "HorizontalPodAutoscaler").items():
        target = deployments.get(hpa["spec"]["scaleTargetRef"]["name"])
        if target is None:
            problems.append(f"HorizontalPodAutoscaler {name}: scales no Deployment here")
            continue
        scaled[target["metadata"]["name"]] = 1
        on_cpu = any((metric.get("resource") or {}).get("name") == "cpu" for metric in hpa["spec"].get("metrics") or [])
        for container in target["spec"]["template"]["spec"]["containers"]:
            if on_cpu and "cpu" not in (container.get("resources") or {}).get("requests", {}):
                problems.append(f"HorizontalPodAutoscaler {name}: CPU utilization needs a CPU request")
    problems += [f"Deployment {name}: sets replicas, which every apply resets under its autoscaler"
                 for name in scaled if "replicas" in (deployments.get(name) or {}).get("spec", {})]
    return problems


def selector_problems(resources: list[Resource]) -> list[str]:
    problems = []
    deployments = _deployments(resources)
    pods = {name: d["spec"]["template"]["metadata"].get("labels") or {} for name, d in deployments.items()}
    for name, deployment in deployments.items():
        if not _labels_match(deployment["spec"]["selector"], pods[name]):
            problems.append(f"Deployment {name}: its selector does not match its pods")
    budgets = of_kind(resources, "PodDisruptionBudget").items()
    for name, budget in budgets:
        if not any(_labels_match(budget["spec"]["selector"], labels) for labels in pods.values()):
            problems.append(f"PodDisruptionBudget {name}: selects no pods")
    for name, deployment in deployments.items():
        if deployment["spec"].get("replicas", 2) > 1 and not any(
                _labels_match(budget["spec"]["selector"], pods[name]) for _, budget in budgets):
            problems.append(f"Deployment {name}: several replicas and no PodDisruptionBudget")
    for name, service in of_kind(resources, "Service").items():
        chosen = [d for d, labels in pods.items() if _labels_match(service["spec"]["selector"], labels)]
        if not chosen:
            problems.append(f"Service {name}: selects no pods")
        ports = {port.get("name") for d in chosen for c in deployments[d]["spec"]["template"]["spec"]["containers"]
                 for port in c.get("ports") or []}
        problems += [f"Service {name}: targetPort {port['targetPort']!r} is no container's port"
                     for port in service["spec"]["ports"] if port.get("targetPort") not in ports]
    return problems


def scrape_problems(resources: list[Resource]) -> list[str]:
    """Each role's pods are annotated for Prometheus on the port its metrics are on."""
    problems = []
    for container in containers(resources):
        role = _role(container)
        if container.workload not in _deployments(resources):
            continue
        if role == ("ingress",):
            expected = str(parse_command(container.args).params["port"])
        else:
            expected = container.env.get("GATEWAYZ_METRICS_PORT", "")
        annotations = _deployments(resources)[container.workload]["spec"]["template"]["metadata"].get(
            "annotations") or {}
        if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/path") != "/metrics":
            problems.append(f"{container.workload}: its pods are not annotated for scraping /metrics")
        if annotations.get("prometheus.io/port") != expected:
            problems.append(f"{container.workload}: annotated port {annotations.get('prometheus.io/port')!r}, "
                            f"its metrics are on {expected!r}")
        if expected not in {str(port.get("containerPort")) for port in container.spec.get("ports") or []}:
            problems.append(f"{container.workload}: declares no container port {expected!r}")
    return problems


# the files as they are


def test_every_manifest_is_in_the_kustomization() -> None:
    assert file_problems() == []


CHECKS: dict[str, Callable[[list[Resource]], list[str]]] = {
    "resources meet the Kubernetes and KEDA schemas": schema_problems,
    "containers run real commands": command_problems,
    "every GATEWAYZ_ variable is a setting and each role has those it needs": settings_problems,
    "worker pools serve the mounted config, with their keys": provider_problems,
    "shutdown grace covers the drain": drain_problems,
    "each pool scales on its own queue": autoscaling_problems,
    "selectors, budgets and Services find their pods": selector_problems,
    "every role is annotated for scraping": scrape_problems,
}


@pytest.mark.parametrize("check", CHECKS)
def test_the_manifests_pass(check: str) -> None:
    assert CHECKS[check](load_resources()) == []


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_builds_the_kustomization() -> None:
    """What ``kubectl apply -k`` would send: the same resources, its image set."""
    built = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=120,
                           check=False)
    assert built.returncode == 0, built.stderr
    resources = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    assert sorted((r["kind"], r["metadata"]["name"]) for r in resources) == sorted(
        (r["kind"], r["metadata"]["name"]) for r in load_resources())
    image = next(entry for entry in load_kustomization()["images"] if entry["name"] == IMAGE)
    assert {container.spec["image"] for container in containers(resources)} == {
        f"{image['newName']}:{image['newTag']}"}


# the checks notice a broken file


def _find(resources: list[Resource], kind: str, name: str) -> Resource:
    return of_kind(resources, kind)[name]


def _worker(resources: list[Resource], pool: str = "openai") -> dict[str, Any]:
    return _find(resources, "Deployment", f"gatewayz-worker-{pool}")["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def _set_env(name: str, value: str) -> Callable[[list[Resource]], None]:
    def change(resources: list[Resource]) -> None:
        _worker(resources)["containers"][0]["env"].append({"name": name, "value": value})
    return change


def _set_args(*args: str) -> Callable[[list[Resource]], None]:
    def change(resources: list[Resource]) -> None:
        _worker(resources)["containers"][0]["args"] = list(args)
    return change


def _edit(kind: str, name: str, edit: Callable[[Resource], None]) -> Callable[[list[Resource]], None]:
    def change(resources: list[Resource]) -> None:
        edit(_find(resources, kind, name))
    return change


def _remove(kind: str, name: str) -> Callable[[list[Resource]], None]:
    def change(resources: list[Resource]) -> None:
        resources.remove(_find(resources, kind, name))
    return change


def _trigger(resource: Resource) -> dict[str, Any]:
    return resource["spec"]["triggers"][0]  # type: ignore[no-any-return]


BREAKAGES: dict[str, tuple[Callable[[list[Resource]], list[str]], Callable[[list[Resource]], None]]] = {
    "misspelt Deployment field": (schema_problems, _edit("Deployment", "gatewayz-billing",
                                                         lambda d: d["spec"].update(replica=2))),
    "port as a word": (schema_problems, _edit("Service", "gatewayz-ingress",
                                              lambda s: s["spec"]["ports"][0].update(port="http"))),
    "misspelt ScaledObject field": (schema_problems, _edit("ScaledObject", "gatewayz-worker-mock",
                                                           lambda s: s["spec"].update(maxReplicas=3))),
    "unknown scaler mode": (schema_problems, _edit("ScaledObject", "gatewayz-worker-mock",
                                                   lambda s: _trigger(s)["metadata"].update(mode="Length"))),
    "misspelt scale-down policy field": (schema_problems, _edit(
        "ScaledObject", "gatewayz-worker-mock", lambda s: s["spec"]["advanced"]["horizontalPodAutoscalerConfig"][
            "behavior"]["scaleDown"]["policies"][0].update(periodSecond=60))),
    "misspelt subcommand": (command_problems, _set_args("wroker", "--provider", "openai")),
    "misspelt option": (command_problems, _set_args("worker", "--provider", "openai", "--concurency", "8")),
    "entrypoint replaced": (command_problems, lambda r: _worker(r)["containers"][0].update(command=["sh"])),
    "unknown setting": (settings_problems, _set_env("GATEWAYZ_DRAIN", "60")),
    "missing Secret": (settings_problems, _remove("Secret", "gatewayz-secrets")),
    "no broker URL": (settings_problems, _edit("Secret", "gatewayz-secrets",
                                               lambda s: s["stringData"].pop("GATEWAYZ_BROKER_URL"))),
    "unknown provider": (provider_problems, _set_args("worker", "--provider", "nope")),
    "pool without its key": (provider_problems, lambda r: _worker(r)["containers"][0]["env"].pop()),
    "provider without a pool": (provider_problems, _remove("Deployment", "gatewayz-worker-openai")),
    "config not mounted": (provider_problems, lambda r: _worker(r)["containers"][0].pop("volumeMounts")),
    "drain longer than the grace": (drain_problems, _set_env("GATEWAYZ_DRAIN_TIMEOUT", "300")),
    "grace far beyond the drain": (drain_problems, lambda r: _worker(r).update(terminationGracePeriodSeconds=600)),
    "worker preStop": (drain_problems, lambda r: _worker(r)["containers"][0].update(
        lifecycle={"preStop": {"exec": {"command": ["sleep", "5"]}}})),
    "ingress preStop beyond the grace": (drain_problems, _edit(
        "Deployment", "gatewayz-ingress", lambda d: d["spec"]["template"]["spec"]["containers"][0]["lifecycle"][
            "preStop"]["exec"].update(command=["sleep", "30"]))),
    "wrong queue": (autoscaling_problems, _edit("ScaledObject", "gatewayz-worker-openai",
                                                lambda s: _trigger(s)["metadata"].update(queueName="jobs.openai"))),
    "realtime queue not watched": (autoscaling_problems, _edit("ScaledObject", "gatewayz-worker-openai",
                                                               lambda s: s["spec"]["triggers"].pop())),
    "pool without a ScaledObject": (autoscaling_problems, _remove("ScaledObject", "gatewayz-worker-openai")),
    "scale to zero": (autoscaling_problems, _edit("ScaledObject", "gatewayz-worker-mock",
                                                  lambda s: s["spec"].update(minReplicaCount=0))),
    "no authentication": (autoscaling_problems, _remove("TriggerAuthentication", "gatewayz-rabbitmq")),
    "replicas under KEDA": (autoscaling_problems, _edit("Deployment", "gatewayz-worker-mock",
                                                        lambda d: d["spec"].update(replicas=3))),
    "HPA on CPU without a request": (autoscaling_problems, _edit(
        "Deployment", "gatewayz-ingress",
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["resources"].pop("requests"))),
    "budget selecting nothing": (selector_problems, _edit(
        "PodDisruptionBudget", "gatewayz-billing",
        lambda b: b["spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/component": "biling"}))),
    "pool without a budget": (selector_problems, _remove("PodDisruptionBudget", "gatewayz-worker-mock")),
    "Service to no port": (selector_problems, _edit("Service", "gatewayz-ingress",
                                                    lambda s: s["spec"]["ports"][0].update(targetPort="web"))),
    "scraped on the wrong port": (scrape_problems, _set_env("GATEWAYZ_METRICS_PORT", "9200")),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_each_check_notices_a_broken_manifest(breakage: str) -> None:
    check, change = BREAKAGES[breakage]
    assert_noticed(check, load_resources(), change)


def test_an_unlisted_manifest_is_noticed(tmp_path: Path) -> None:
    for path in K8S.rglob("*.yaml"):
        (tmp_path / path.relative_to(K8S)).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path.relative_to(K8S)).write_text(path.read_text())
    assert file_problems(tmp_path) == []
    (tmp_path / "workers" / "acme.yaml").write_text((K8S / "workers" / "openai.yaml").read_text())
    assert file_problems(tmp_path) == ["workers/acme.yaml is not listed in kustomization.yaml"]
