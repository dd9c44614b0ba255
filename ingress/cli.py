"""``gatewayz``: one command that starts any role.

``serve`` runs everything in one process (embedded by default; against the
real services when their URLs are set). ``ingress``, ``worker``, ``billing``,
``prober``, ``orchestrator`` (batches) and ``migrate`` are the distributed
roles; ``keys create`` makes API keys; ``batch`` submits and follows batches
through the HTTP API (``ingress.batch_cli``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TypeVar

import click
import uvicorn
import uvloop
from prometheus_client.multiprocess import mark_process_dead
from pydantic import ValidationError

from billing.ledger import Discrepancy, Ledger
from billing.limits import KeyLimits
from ingress import collector
from ingress.app import create_app
from ingress.auth import KEY_PREFIX, hash_key, key_secret, new_key
from ingress.batch_cli import batch
from ingress.processes import serve_processes
from ingress.runtime import (
    EMBEDDED_CONCURRENCY,
    BillingRuntime,
    ProberRuntime,
    Role,
    Runtime,
    embedded_roles,
    open_billing,
    open_prober,
    open_runtime,
    open_workers,
)
from ingress.server import http_config
from scheduler.logs import configure_logging
from schema.catalog import ConfigError, GatewayConfig, load_config
from schema.coupons import iso_time
from schema.database import create_engine, migrate
from schema.keys import MAX_CREDITS, limit_micros, parse_duration
from schema.money import MicroCredits, credits_to_micros, micros_to_credits
from schema.settings import Settings

log = logging.getLogger("gatewayz")

R = TypeVar("R", bound=Role)

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="providers and models (TOML)"
)
# Anything shaped like a GatewayZ API key is taken out of every log line.
API_KEY_PATTERN = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{16,}")

host_option = click.option("--host", default="127.0.0.1", show_default=True)
port_option = click.option("--port", default=8000, show_default=True, type=int)
metrics_port_option = click.option(
    "--metrics-port", type=click.IntRange(0, 65535), default=None,
    help="serve GET /metrics on this port (default: GATEWAYZ_METRICS_PORT; neither: no metrics endpoint)")


def _plain_settings() -> Settings:
    """Settings for commands that do not route requests (no catalog needed)."""
    settings = Settings()
    configure_logging(settings, patterns=[API_KEY_PATTERN])
    return settings


def _settings(config_path: Path | None, *, needs: tuple[str, ...] = (),
              metrics_port: int | None = None) -> tuple[Settings, GatewayConfig]:
    settings = _plain_settings()
    if config_path is not None:
        settings = settings.model_copy(update={"config": config_path})
    if metrics_port is not None:
        settings = settings.model_copy(update={"metrics_port": metrics_port})
    missing = [f"GATEWAYZ_{name.upper()}" for name in needs if not getattr(settings, name)]
    if missing:
        # A distributed role without its services would serve an in-process
        # queue that nobody else can reach.
        raise click.ClickException(f"this role runs distributed: set {', '.join(missing)}")
    try:
        config = load_config(settings.config, os.environ, credits_per_usd=settings.credits_per_usd,
                             secrets_file=settings.secrets_file)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    # Again, now that the providers' keys are known: they are secrets too.
    provider_keys = [spec.api_key.get_secret_value() for spec in config.providers.values() if spec.api_key]
    configure_logging(settings, secrets=provider_keys, patterns=[API_KEY_PATTERN])
    return settings, config


@click.group()
def main() -> None:
    """GatewayZ: a queue-based LLM inference gateway."""


main.add_command(batch)


@main.command()
@host_option
@port_option
@config_option
@click.option("--concurrency", default=EMBEDDED_CONCURRENCY, show_default=True, type=click.IntRange(1, 10_000),
              help="jobs each provider's pool runs at once")
def serve(host: str, port: int, config_path: Path | None, concurrency: int) -> None:
    """Run every role in one process (embedded unless the service URLs are set)."""
    settings, config = _settings(config_path)
    uvloop.run(_first_start(settings, port))
    app = create_app(settings, config, roles=functools.partial(embedded_roles, concurrency=concurrency),
                     apply_migrations=True)
    collector.settle()
    _serve_http(app, host, port, settings)


@main.command()
@host_option
@port_option
@config_option
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
              help="processes serving the port, each a whole ingress (one per core)")
def ingress(host: str, port: int, config_path: Path | None, workers: int) -> None:
    """Run the HTTP API only (jobs go to the broker)."""
    settings, config = _settings(config_path, needs=("broker_url", "redis_url"))
    if workers == 1:
        app = create_app(settings, config)
        collector.settle()
        _serve_http(app, host, port, settings)
        return
    # A scrape reaches any one of the processes: each counts into a file of
    # this directory, and each /metrics reads them all (``schema.metrics``).
    metrics_dir = Path(tempfile.mkdtemp(prefix="gatewayz-metrics-"))
    settings = settings.model_copy(update={"metrics_dir": metrics_dir})
    app = create_app(settings, config)
    collector.settle()  # before forking: the frozen pages stay shared
    key_secret(settings)  # made now if it is to be made, not by several processes at once
    try:
        status = serve_processes(_http_config(app, host, port, settings), workers,
                                 ended=functools.partial(mark_process_dead, path=str(metrics_dir)))
    except OSError as error:
        raise click.ClickException(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if status:
        click.echo("Error: an ingress process could not start; see its log above", err=True)
        sys.exit(status)


@main.command()
@click.option("--provider", required=True, help="the provider whose queue this pool serves")
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 10_000))
@config_option
@metrics_port_option
def worker(provider: str, concurrency: int, config_path: Path | None, metrics_port: int | None) -> None:
    """Run one provider's worker pool."""
    settings, config = _settings(config_path, needs=("broker_url", "redis_url"), metrics_port=metrics_port)
    if provider in config.disabled_providers:
        raise click.ClickException(f"provider {provider!r} is disabled: {config.disabled_providers[provider].reason}")
    if provider not in config.providers:
        raise click.ClickException(f"unknown provider {provider!r}; known: {', '.join(sorted(config.providers))}")
    collector.settle()
    uvloop.run(_run_role(open_workers(settings, config), lambda runtime: runtime.start_pool(provider, concurrency)))


@main.group(invoke_without_command=True)
@config_option
@metrics_port_option
@click.pass_context
def billing(context: click.Context, config_path: Path | None, metrics_port: int | None) -> None:
    """Run the settlement consumer, the dead-letter reader, and the sweeper of expired holds and trial credits."""
    if context.invoked_subcommand is not None:
        return
    settings, _ = _settings(config_path, needs=("broker_url",), metrics_port=metrics_port)
    collector.settle()
    uvloop.run(_run_role(open_billing(settings), BillingRuntime.start_billing))


@main.command()
@config_option
@metrics_port_option
def prober(config_path: Path | None, metrics_port: int | None) -> None:
    """Run the active health prober: every provider probed each GATEWAYZ_PROBE_INTERVAL seconds."""
    settings, config = _settings(config_path, needs=("broker_url", "redis_url"), metrics_port=metrics_port)
    if not settings.probe_interval:
        raise click.ClickException("set GATEWAYZ_PROBE_INTERVAL (seconds between probes) to run the prober")
    collector.settle()
    uvloop.run(_run_role(open_prober(settings, config), ProberRuntime.start_prober))


@billing.command()
def reconcile() -> None:
    """Recompute every account from the ledger; exit 1 on any difference."""
    settings = _plain_settings()

    async def run() -> list[Discrepancy]:
        engine = create_engine(settings)
        try:
            if settings.embedded_database:
                await migrate(engine)
            return await Ledger(engine).reconcile()
        finally:
            await engine.dispose()

    found = uvloop.run(run())
    for difference in found:
        click.echo(f"account {difference.account_id}: {difference.what} recorded {difference.recorded}, "
                   f"recomputed {difference.recomputed}")
    if found:
        raise click.ClickException(f"{len(found)} differences")
    click.echo("every account reconciles with the ledger")


@main.command()
@config_option
@metrics_port_option
def orchestrator(config_path: Path | None, metrics_port: int | None) -> None:
    """Run the batch orchestrator: checks batches' input and releases their lines as jobs."""
    settings, config = _settings(config_path, needs=("broker_url", "redis_url", "database_url"),
                                 metrics_port=metrics_port)
    collector.settle()
    uvloop.run(_run_role(open_runtime(settings, config, subscribe=False), Runtime.start_orchestrator))


@main.command("migrate")
def migrate_command() -> None:
    """Bring the database schema to the newest revision."""
    settings = _plain_settings()

    async def run() -> None:
        engine = create_engine(settings)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    uvloop.run(run())
    click.echo("database is at the newest revision")


@main.group()
def keys() -> None:
    """Manage API keys."""


def _limit(context: click.Context, parameter: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return limit_micros(value)
    except ValidationError:
        raise click.BadParameter(f"{value!r} is not a limit: credits from 0 to {MAX_CREDITS}, "
                                 f"to the micro-credit") from None


def _duration(context: click.Context, parameter: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@keys.command("create")
@click.option("--name", required=True)
@click.option("--credits", "credit_amount", default="0", show_default=True, help="credits granted to the new account")
@click.option("--daily-limit", callback=_limit, help="credits the key may spend per UTC day")
@click.option("--monthly-limit", callback=_limit, help="credits the key may spend per UTC month")
@click.option("--total-limit", callback=_limit, help="credits the key may spend in all")
@click.option("--expires-in", callback=_duration, help="the key stops working after this long: 30d, 12h, 90m")
@click.option("--plan", help="the key's plan (rate limits, priority), one of the config's [plans]; default: "
                             "the config's default plan")
@config_option
def keys_create(name: str, credit_amount: str, daily_limit: int | None, monthly_limit: int | None,
                total_limit: int | None, expires_in: float | None, plan: str | None,
                config_path: Path | None) -> None:
    """Create an account with CREDITS and an API key for it; the key is the last line."""
    settings = _plain_settings()
    if plan is not None:
        # Only a plan needs the config: plain keys can be made without one.
        _, config = _settings(config_path)
        if plan not in config.plans:
            raise click.BadParameter(f"unknown plan {plan!r}; the config has {', '.join(sorted(config.plans))}",
                                     param_hint="--plan")
    try:
        grant = credits_to_micros(Decimal(credit_amount))
    except (InvalidOperation, ValueError):
        raise click.BadParameter(f"{credit_amount!r} is not an amount of credits", param_hint="--credits") from None
    if grant < 0:
        raise click.BadParameter("credits cannot be negative", param_hint="--credits")
    limits = KeyLimits(daily_limit, monthly_limit, total_limit)
    expires_at = time.time() + expires_in if expires_in is not None else None
    key = uvloop.run(_create_key(settings, name, grant, limits=limits, expires_at=expires_at, plan=plan))
    click.echo(f"account {name!r} created with {credit_amount} credits; API key:")
    if plan is not None:
        click.echo(f"  plan: {plan}")
    for kind, limit in (("daily", daily_limit), ("monthly", monthly_limit), ("total", total_limit)):
        if limit is not None:
            click.echo(f"  {kind} limit: {micros_to_credits(limit)} credits")
    if expires_at is not None:
        click.echo(f"  expires at {iso_time(expires_at)}")
    click.echo(key)


async def _create_key(settings: Settings, name: str, grant: MicroCredits, *,
                      limits: KeyLimits = KeyLimits(), expires_at: float | None = None,
                      plan: str | None = None) -> str:
    engine = create_engine(settings)
    try:
        if settings.embedded_database:
            await migrate(engine)
        ledger = Ledger(engine)
        account_id = await ledger.create_account(name, grant)
        key = new_key()
        await ledger.create_key(account_id, name, hash_key(key_secret(settings), key), key[:8], limits=limits,
                                expires_at=expires_at, plan=plan)
        return key
    finally:
        await engine.dispose()


async def _first_start(settings: Settings, port: int) -> None:
    """On an empty database, make a development key with some free credits."""
    engine = create_engine(settings)
    try:
        await migrate(engine)
        if await Ledger(engine).count_user_accounts():
            return
    finally:
        await engine.dispose()
    key = await _create_key(settings, "development", credits_to_micros(settings.dev_credits))
    base = f"http://127.0.0.1:{port}/v1"
    click.echo(
        f"\nFirst start: created a development API key with {settings.dev_credits} free credits.\n"
        f"Keep it; it is not shown again.\n\n"
        f"  export OPENAI_API_KEY={key}\n"
        f"  export OPENAI_BASE_URL={base}\n\n"
        f"  curl {base}/chat/completions -H \"Authorization: Bearer $OPENAI_API_KEY\" \\\n"
        f"    -H 'content-type: application/json' \\\n"
        f"    -d '{{\"model\": \"mock/echo\", \"messages\": [{{\"role\": \"user\", \"content\": \"hello\"}}]}}'\n"
    )


def _serve_http(app: object, host: str, port: int, settings: Settings) -> None:
    uvicorn.Server(_http_config(app, host, port, settings)).run()


def _http_config(app: object, host: str, port: int, settings: Settings) -> uvicorn.Config:
    # ``log_config=None``: uvicorn's lines go through the process's own handler
    # (``scheduler.logs``: its format, the secrets redacted), not uvicorn's.
    return http_config(app, settings, host=host, port=port, log_level=settings.log_level.lower(),
                       log_config=None, timeout_graceful_shutdown=10)


async def _run_role(opening: AbstractAsyncContextManager[R], start: Callable[[R], object]) -> None:
    """Run a background role until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with opening as runtime:
        start(runtime)
        runtime.serve_metrics()
        await _first_of(stop.wait(), *runtime.tasks)
    log.info("stopped")


async def _first_of(*work: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(item) for item in work]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
