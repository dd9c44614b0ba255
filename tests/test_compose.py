"""``compose.yaml`` against the code it deploys.

Every service built from the gateway's image runs a real ``gatewayz`` command
(parsed by the CLI's own click parser), sets only real settings, serves
providers its mounted config defines, and waits for the infrastructure its
role uses. Docker need not be installed: the file is only read.

The checks are functions that return the problems they find, so the last
tests can prove that each one notices a broken file.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml
from click.testing import CliRunner

from ingress.cli import _http_config, main
from schema.catalog import ConfigError, GatewayConfig, load_config
from schema.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"

# What each role opens (so what it must be pointed at, and wait for).
ROLE_USES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("ingress",): ("broker_url", "redis_url", "database_url", "key_secret"),
    ("worker",): ("broker_url", "redis_url"),
    ("billing",): ("broker_url", "redis_url", "database_url"),  # Redis: the job marks its dead letters need
    ("migrate",): ("database_url",),
    ("serve",): ("broker_url", "redis_url", "database_url", "key_secret"),
}
# Roles that read and write the tables, so must start after the migration.
NEEDS_SCHEMA = {("ingress",), ("billing",), ("serve",)}
SERVICE_URLS = ("broker_url", "redis_url", "database_url")
SHARED = (*SERVICE_URLS, "key_secret")


def is_setting(variable: str) -> bool:
    """Whether ``GATEWAYZ_…`` ``variable`` is one the gateway reads."""
    name = variable.removeprefix("GATEWAYZ_").lower()
    return name in Settings.model_fields


def shutdown_budget(role: tuple[str, ...], env: Mapping[str, str | None]) -> float | None:
    """Seconds a role may take after SIGTERM before it has let go of its work:
    a worker's drain, the ingress's graceful shutdown; None for the others."""
    if role == ("worker",):
        return float(env.get("GATEWAYZ_DRAIN_TIMEOUT") or Settings.model_fields["drain_timeout"].default)
    if role == ("ingress",):
        return float(_http_config(None, "0.0.0.0", 8000, Settings()).timeout_graceful_shutdown or 0)
    return None


@dataclass(frozen=True)
class Invocation:
    path: tuple[str, ...]  # ("worker",), ("keys", "create") …
    params: dict[str, Any]


class CommandError(Exception):
    """``gatewayz`` would refuse these arguments."""


def _commands(command: click.Command) -> Iterator[click.Command]:
    yield command
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            yield from _commands(sub)


def parse_command(args: Sequence[str]) -> Invocation:
    """Parse ``gatewayz ARGS`` exactly as the CLI does (subcommands, option
    names, types, required options) without running anything: every callback
    is swapped for one that records what click resolved."""
    reached: list[Invocation] = []

    def record(**params: Any) -> None:
        context = click.get_current_context()
        reached.append(Invocation(tuple(context.command_path.split()[1:]), params))

    saved = [(command, command.callback) for command in _commands(main)]
    try:
        for command, _ in saved:
            command.callback = record
        result = CliRunner().invoke(main, list(args), prog_name="gatewayz", catch_exceptions=False)
    finally:
        for command, callback in saved:
            command.callback = callback
    if result.exit_code != 0:
        raise CommandError(result.output.strip())
    if not reached or not reached[-1].path:
        raise CommandError("no subcommand")
    leaf = reached[-1]
    resolved = main
    for name in leaf.path:
        resolved = resolved.commands[name]  # type: ignore[attr-defined]
    if isinstance(resolved, click.Group) and not resolved.invoke_without_command:
        raise CommandError(f"`{' '.join(leaf.path)}` needs a subcommand")
    return leaf


# reading the file


def load_compose(path: Path = COMPOSE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())  # merges `<<: *anchor` keys like Compose does


def gateway_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the gateway's own image."""
    services = compose.get("services") or {}
    built = {service.get("image") for service in services.values() if "build" in service} - {None}
    return {name: service for name, service in services.items() if "build" in service or service.get("image") in built}


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict((item.split("=", 1) + [None])[:2] for item in env)  # type: ignore[misc]
    return {name: None if value is None else str(value) for name, value in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    if command is None:
        raise CommandError("no command: the image's default would run")
    if "entrypoint" in service:
        raise CommandError("overrides the image's `gatewayz` entrypoint")
    return command.split() if isinstance(command, str) else [str(arg) for arg in command]


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency -> condition (the short list form means ``service_started``)."""
    found = service.get("depends_on") or {}
    if isinstance(found, list):
        return {name: "service_started" for name in found}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in found.items()}


def setting(service: dict[str, Any], name: str) -> str | None:
    return environment(service).get(f"GATEWAYZ_{name.upper()}")


def host_path(service: dict[str, Any], container_path: str, base: Path) -> Path | None:
    """Where a file the container reads comes from, through its bind mounts."""
    wanted = PurePosixPath(container_path)
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
        else:
            source, target = volume.get("source", ""), volume.get("target", "")
        if source.startswith((".", "/")) and target:
            if wanted == PurePosixPath(target):
                return (base / source).resolve()
            if PurePosixPath(target) in wanted.parents:
                return (base / source / wanted.relative_to(target)).resolve()
    return None


def config_of(service: dict[str, Any], invocation: Invocation, base: Path) -> GatewayConfig:
    """The providers-and-models config this service loads (``--config`` or ``GATEWAYZ_CONFIG``)."""
    chosen = invocation.params.get("config_path") or setting(service, "config")
    credits_per_usd = Decimal(setting(service, "credits_per_usd") or Settings.model_fields["credits_per_usd"].default)
    if not chosen:
        return load_config(None, {}, credits_per_usd=credits_per_usd)
    path = host_path(service, str(chosen), base)
    if path is None:
        raise ConfigError(f"{chosen} is not mounted from the host")
    return load_config(path, {}, credits_per_usd=credits_per_usd)


# the checks


def command_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    services = gateway_services(compose)
    if not services:
        problems.append("no service runs the gateway's image")
    for name, service in services.items():
        try:
            parse_command(command_of(service))
        except CommandError as error:
            problems.append(f"{name}: {error}")
    return problems


def settings_problems(compose: dict[str, Any]) -> list[str]:
    return [
        f"{name}: {variable} is not a setting"
        for name, service in (compose.get("services") or {}).items()
        for variable in environment(service)
        if variable.startswith("GATEWAYZ_") and not is_setting(variable)
    ]


def provider_problems(compose: dict[str, Any], base: Path) -> list[str]:
    problems = []
    served: dict[Path | None, set[str]] = {}
    configs: dict[Path | None, GatewayConfig] = {}
    for name, service in gateway_services(compose).items():
        try:
            invocation = parse_command(command_of(service))
        except CommandError:
            continue  # command_problems reports it
        chosen = invocation.params.get("config_path") or setting(service, "config")
        key = host_path(service, str(chosen), base) if chosen else None
        try:
            configs[key] = config_of(service, invocation, base)
        except ConfigError as error:
            problems.append(f"{name}: {error}")
            continue
        if invocation.path == ("worker",):
            provider = invocation.params["provider"]
            served.setdefault(key, set()).add(provider)
            if provider not in configs[key].providers:
                problems.append(f"{name}: provider {provider!r} is not in {key}")
    for key, config in configs.items():
        for provider in sorted(set(config.providers) - served.get(key, set())):
            problems.append(f"provider {provider!r} in {key} has no worker service: its jobs would wait forever")
    return problems


def dependency_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    services = compose.get("services") or {}
    gateway = gateway_services(compose)
    roles = {}
    for name, service in gateway.items():
        try:
            roles[name] = parse_command(command_of(service)).path
        except CommandError:
            continue
    migrations = {name for name, path in roles.items() if path == ("migrate",)}
    for name in migrations:
        if str(gateway[name].get("restart", "no")) not in ("no", "on-failure"):
            problems.append(f"{name}: a one-shot must not restart after it succeeds")
    for name, path in roles.items():
        service, needs = gateway[name], depends_on(gateway[name])
        for used in ROLE_USES.get(path, ()):
            value = setting(service, used)
            if not value:
                # Unset, the role would quietly run embedded, alone.
                problems.append(f"{name}: `{' '.join(path)}` needs GATEWAYZ_{used.upper()}")
                continue
            if used not in SERVICE_URLS:
                continue
            host = urlsplit(value).hostname
            if host not in services:
                problems.append(f"{name}: GATEWAYZ_{used.upper()} points at {host!r}, not a service")
            elif needs.get(host) != "service_healthy":
                problems.append(f"{name}: must wait for {host} (depends_on condition: service_healthy)")
            elif not _has_healthcheck(services[host]):
                problems.append(f"{host}: has no healthcheck, so service_healthy never holds")
        if path in NEEDS_SCHEMA and not any(needs.get(m) == "service_completed_successfully" for m in migrations):
            problems.append(f"{name}: must wait for the migration (service_completed_successfully)")
    for variable in SHARED:
        values = {setting(service, variable) for name, service in gateway.items() if name in roles} - {None}
        if len(values) > 1:
            problems.append(f"GATEWAYZ_{variable.upper()} differs between gateway services: {sorted(values)}")
    return problems


def _has_healthcheck(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck") or {}
    return bool(check.get("test")) and not check.get("disable") and check.get("test") != ["NONE"]


def _seconds(duration: str) -> float:
    """A Compose duration (``45s``, ``1m30s``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    return sum(float(amount) * units[unit] for amount, unit in re.findall(r"([0-9.]+)(h|ms|us|m|s)", duration))


def grace_problems(compose: dict[str, Any]) -> list[str]:
    """`docker compose stop` waits for a role's drain before its SIGKILL (10 s unless set)."""
    problems = []
    for name, service in gateway_services(compose).items():
        try:
            role = parse_command(command_of(service)).path
        except CommandError:
            continue
        budget = shutdown_budget(role, environment(service))
        grace = _seconds(str(service.get("stop_grace_period", "10s")))
        if budget is not None and grace < budget + 5:
            problems.append(f"{name}: stop_grace_period {grace:g} s kills it during its {budget:g} s shutdown")
    return problems


def port_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in gateway_services(compose).items():
        try:
            invocation = parse_command(command_of(service))
        except CommandError:
            continue
        if invocation.path in (("ingress",), ("serve",)):
            published = {str(port).split(":")[-1] for port in service.get("ports") or []}
            if str(invocation.params["port"]) not in published:
                problems.append(f"{name}: listens on {invocation.params['port']} but publishes {sorted(published)}")
    return problems


# the file as it is


def test_gateway_services_run_real_commands() -> None:
    assert command_problems(load_compose()) == []


def test_every_gatewayz_variable_is_a_setting() -> None:
    assert settings_problems(load_compose()) == []


def test_workers_serve_providers_of_the_mounted_config() -> None:
    assert provider_problems(load_compose(), COMPOSE.parent) == []


def test_roles_wait_for_the_infrastructure_they_use() -> None:
    assert dependency_problems(load_compose()) == []


def test_ingress_publishes_its_port() -> None:
    assert port_problems(load_compose()) == []


def test_stop_waits_for_the_drain() -> None:
    assert grace_problems(load_compose()) == []


# the checks notice a broken file


def _set_command(*args: str):  # type: ignore[no-untyped-def]
    def change(compose: dict[str, Any]) -> None:
        compose["services"]["worker-mock"]["command"] = list(args)
    return change


def _set_env(variable: str, value: str | None):  # type: ignore[no-untyped-def]
    def change(compose: dict[str, Any]) -> None:
        env = compose["services"]["billing"]["environment"]
        if value is None:
            env.pop(variable)
        else:
            env[variable] = value
    return change


def _drop_dependency(service: str, dependency: str):  # type: ignore[no-untyped-def]
    def change(compose: dict[str, Any]) -> None:
        del compose["services"][service]["depends_on"][dependency]
    return change


def _set_condition(service: str, dependency: str, condition: str):  # type: ignore[no-untyped-def]
    def change(compose: dict[str, Any]) -> None:
        compose["services"][service]["depends_on"][dependency]["condition"] = condition
    return change


def _drop_healthcheck(service: str):  # type: ignore[no-untyped-def]
    def change(compose: dict[str, Any]) -> None:
        compose["services"][service]["healthcheck"] = None
    return change


def _set_service(service: str, key: str, value: Any):  # type: ignore[no-untyped-def]
    def change(compose: dict[str, Any]) -> None:
        compose["services"][service][key] = value
    return change


def _remove_service(service: str):  # type: ignore[no-untyped-def]
    def change(compose: dict[str, Any]) -> None:
        del compose["services"][service]
    return change


BREAKAGES = {
    "misspelled subcommand": (command_problems, _set_command("wroker", "--provider", "mock")),
    "misspelled option": (command_problems, _set_command("worker", "--provider", "mock", "--concurency", "32")),
    "bad option value": (command_problems, _set_command("worker", "--provider", "mock", "--concurrency", "lots")),
    "missing required option": (command_problems, _set_command("worker", "--concurrency", "32")),
    "group without subcommand": (command_problems, _set_command("keys")),
    "unknown setting": (settings_problems, _set_env("GATEWAYZ_BROKER", "amqp://rabbitmq")),
    "unknown provider": (lambda c: provider_problems(c, COMPOSE.parent), _set_command("worker", "--provider", "nope")),
    "provider without a pool": (lambda c: provider_problems(c, COMPOSE.parent), _remove_service("worker-openai")),
    "unmounted config": (lambda c: provider_problems(c, COMPOSE.parent), _set_env("GATEWAYZ_CONFIG", "/nowhere.toml")),
    "no broker URL": (dependency_problems, _set_env("GATEWAYZ_BROKER_URL", None)),
    "URL to no service": (dependency_problems, _set_env("GATEWAYZ_DATABASE_URL", "postgresql+asyncpg://db/x")),
    "no wait for the broker": (dependency_problems, _drop_dependency("worker-mock", "rabbitmq")),
    "no wait for migrations": (dependency_problems, _drop_dependency("ingress", "migrate")),
    "started is not healthy": (dependency_problems, _set_condition("billing", "postgres", "service_started")),
    "healthy without a healthcheck": (dependency_problems, _drop_healthcheck("redis")),
    "different key secret": (dependency_problems, _set_env("GATEWAYZ_KEY_SECRET", "another")),
    "worker killed mid-drain": (grace_problems, _set_service("worker-mock", "stop_grace_period", "20s")),
    "ingress killed mid-shutdown": (grace_problems, _set_service("ingress", "stop_grace_period", "10s")),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_each_check_notices_a_broken_file(breakage: str) -> None:
    check, change = BREAKAGES[breakage]
    compose = copy.deepcopy(load_compose())
    assert check(compose) == []
    for service in compose["services"].values():  # unshare what the YAML anchors share
        if "environment" in service:
            service["environment"] = dict(service["environment"])
    change(compose)
    assert check(compose) != []
