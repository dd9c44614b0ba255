"""Reading ``deploy/k8s`` as Kubernetes would see it, without a cluster:
the resources the kustomization lists, and what each container runs and
has in its environment once its ConfigMaps and Secrets are resolved."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"

Resource = dict[str, Any]


def load_kustomization(base: Path = K8S) -> dict[str, Any]:
    return yaml.safe_load((base / "kustomization.yaml").read_text())


def load_resources(base: Path = K8S) -> list[Resource]:
    """Every resource of every file the kustomization lists, in order."""
    found: list[Resource] = []
    for name in load_kustomization(base).get("resources") or []:
        found.extend(doc for doc in yaml.safe_load_all((base / name).read_text()) if doc)
    return found


def of_kind(resources: list[Resource], kind: str) -> dict[str, Resource]:
    return {resource["metadata"]["name"]: resource for resource in resources if resource.get("kind") == kind}


def pod_spec(workload: Resource) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def secret_data(secret: Resource) -> dict[str, str]:
    """A Secret's values (only ``stringData`` is written in this repo)."""
    return {name: str(value) for name, value in (secret.get("stringData") or {}).items()}


@dataclass
class Container:
    """One container of a Deployment or Job, its environment resolved."""

    workload: str
    spec: dict[str, Any]
    pod: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # references to nothing

    @property
    def args(self) -> list[str]:
        return [str(arg) for arg in self.spec.get("args") or []]

    def mounted_file(self, path: str, resources: list[Resource]) -> str | None:
        """The text a file at ``path`` has in this container, from a ConfigMap volume."""
        wanted = PurePosixPath(path)
        volumes = {volume["name"]: volume for volume in self.pod.get("volumes") or []}
        maps = of_kind(resources, "ConfigMap")
        for mount in self.spec.get("volumeMounts") or []:
            source = volumes.get(mount["name"], {}).get("configMap")
            if source is None or wanted.parent != PurePosixPath(mount["mountPath"]):
                continue
            data = (maps.get(source["name"]) or {}).get("data") or {}
            if wanted.name in data:
                return str(data[wanted.name])
        return None


def containers(resources: list[Resource]) -> Iterator[Container]:
    """Every container of every Deployment and Job, with ``envFrom`` and
    ``valueFrom`` resolved against the ConfigMaps and Secrets listed."""
    maps = {name: {key: str(value) for key, value in (resource.get("data") or {}).items()}
            for name, resource in of_kind(resources, "ConfigMap").items()}
    secrets = {name: secret_data(r) for name, r in of_kind(resources, "Secret").items()}
    for resource in resources:
        if resource.get("kind") not in ("Deployment", "Job"):
            continue
        pod = pod_spec(resource)
        for spec in pod.get("containers") or []:
            container = Container(resource["metadata"]["name"], spec, pod)
            for source in spec.get("envFrom") or []:
                kind, ref = ("configMapRef", maps) if "configMapRef" in source else ("secretRef", secrets)
                name = source[kind]["name"]
                if name not in ref:
                    container.problems.append(f"{container.workload}: envFrom {kind} {name!r} is not a resource here")
                container.env.update(ref.get(name, {}))
            for item in spec.get("env") or []:
                if "value" in item:
                    container.env[item["name"]] = str(item["value"])
                    continue
                ref_kind, ref = (("secretKeyRef", secrets) if "secretKeyRef" in item["valueFrom"]
                                 else ("configMapKeyRef", maps))
                target = item["valueFrom"][ref_kind]
                value = ref.get(target["name"], {}).get(target["key"])
                if value is None:
                    container.problems.append(f"{container.workload}: {item['name']} refers to "
                                              f"{target['name']}/{target['key']}, which is not here")
                container.env[item["name"]] = value or ""
            yield container
