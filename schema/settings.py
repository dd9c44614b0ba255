"""Process settings, read once from the environment (prefix ``GATEWAYZ_``).

Which transports a process uses follows from what is set: a broker URL selects
RabbitMQ, a Redis URL selects Redis pub/sub, a database URL selects that
database. With nothing set the gateway runs embedded (in-process queues and a
SQLite file under ``data_dir``).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schema.health import ProbeKind


class Settings(BaseSettings):
    # ``populate_by_name``: the OTEL_* fields are read under OTel's names, and built under their own.
    model_config = SettingsConfigDict(env_prefix="GATEWAYZ_", extra="ignore", env_ignore_empty=True,
                                      populate_by_name=True)

    broker_url: str | None = Field(None, description="amqp://… selects RabbitMQ for jobs and usage events")
    redis_url: str | None = Field(None, description="redis://… selects Redis pub/sub for result streams")
    rate_limit_redis_url: str | None = Field(
        None, description="redis://… where rate limits are counted (default: redis_url; neither: in this process)")
    database_url: str | None = Field(None, description="postgresql+asyncpg://… (default: SQLite in data_dir)")
    data_dir: Path = Field(Path(".gatewayz"), description="where embedded data (SQLite, the key secret) lives")
    config: Path | None = Field(None, description="TOML file with providers and models")
    secrets_file: Path | None = Field(
        None, description="dotenv file (NAME=value lines) of provider keys and catalog placeholders"
    )
    key_secret: str | None = Field(None, description="HMAC secret for API keys (default: generated in data_dir)")
    namespace: str = Field("gatewayz", description="prefix of queue, exchange and channel names")
    request_timeout: float = Field(600.0, gt=0, description="default deadline of a request, seconds")
    stream_idle_timeout: float = Field(120.0, gt=0, description="longest silence between two stream events, seconds")
    max_body_bytes: int = Field(
        32 * 1024 * 1024, gt=0, description="largest request body, bytes; a larger one gets 413 before it is read")
    max_file_bytes: int = Field(
        512 * 1024 * 1024, gt=0, description="largest file uploaded to /v1/files, bytes (413); OpenAI's limit")
    max_batch_file_bytes: int = Field(
        200 * 1024 * 1024, gt=0, description="largest file uploaded for purpose batch, bytes (413); OpenAI's limit")
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="largest request line and header fields together, bytes; more gets 431")
    read_timeout: float = Field(
        30.0, gt=0, description="seconds a client may take to send its headers, or stay silent within its body (408)")
    upstream_connect_timeout: float = Field(10.0, gt=0)
    upstream_retries: int = Field(1, ge=0, le=10, description="retries on the same provider before failing over")
    retry_backoff: float = Field(0.25, ge=0, description="first retry's backoff, seconds; doubled per retry, jittered")
    retry_after_max: float = Field(5.0, ge=0,
                                   description="longest upstream retry-after a worker waits; longer fails over")
    breaker_failures: int = Field(5, ge=1, description="consecutive failures that open a provider's circuit")
    breaker_reset_timeout: float = Field(30.0, gt=0, description="seconds a circuit stays open before a probe")
    probe_interval: float = Field(
        0.0, ge=0, description="seconds between active health probes of every provider (0: no prober)")
    probe_kind: ProbeKind = Field(
        "models", description="models: list the provider's models (no tokens); chat: a 1-token completion (paid)")
    probe_timeout: float = Field(10.0, gt=0, description="seconds one probe may take")
    dev_credits: str = Field("5", description="credits granted to the development key made on first start")
    drain_timeout: float = Field(30.0, ge=0,
                                 description="on SIGTERM, seconds a worker gives its jobs in hand to finish")
    reserved_slots: int | None = Field(
        None, ge=0, description="slots of each pool bulk and batch jobs may not take, kept for realtime and "
        "standard ones (unset: a quarter of the pool, at least 1, and at least realtime_slots; never all of it)")
    realtime_slots: int | None = Field(
        None, ge=0, description="of the reserved slots, those standard jobs may not take either, kept for realtime "
        "ones (unset: none)")
    queue_deadline_realtime: float = Field(10.0, gt=0,
                                           description="longest queue wait a realtime job is admitted for, s")
    queue_deadline_standard: float = Field(60.0, gt=0,
                                           description="longest queue wait a standard job is admitted for, s")
    queue_deadline_bulk: float = Field(600.0, gt=0, description="longest queue wait a bulk job is admitted for, s")
    admission_control: bool = Field(True, description="refuse at once a job whose estimated queue wait is too long")
    default_service_time: float = Field(
        10.0, gt=0, description="seconds a job is assumed to hold a worker slot on a pool with no history yet")
    pool_gone_after: float = Field(
        30.0, ge=0, description="seconds a pool that had workers may have none before its requests get 503")
    persistent_jobs: bool = Field(True, description="job messages survive a broker restart")
    log_level: str = Field("info")
    log_format: Literal["text", "json"] = Field(
        "text", description="text: one readable line per record; json: one JSON object per line, with the job id")
    admin_token: SecretStr | None = Field(
        None, description="bearer token of the admin API (unset: the admin API answers 503)"
    )
    stripe_webhook_secret: SecretStr | None = Field(
        None, description="Stripe endpoint signing secret, whsec_… (unset: /webhooks/stripe answers 503)"
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65535,
        description="port this process serves GET /metrics on (worker, billing, prober; the ingress has it anyway)")
    metrics_host: str = Field("0.0.0.0", description="address GATEWAYZ_METRICS_PORT listens on")
    metrics_token: SecretStr | None = Field(
        None, description="bearer token GET /metrics asks for (unset: open, as Prometheus expects)")
    metrics_dir: Path | None = Field(
        None, description="where the processes of `gatewayz ingress --workers N` keep their metrics (set by it)")
    batch_max_in_flight: int = Field(256, gt=0, description="lines of one batch queued or running at once")
    batch_account_max_in_flight: int = Field(
        1024, gt=0, description="lines of one account's batches queued or running at once")
    batch_step_interval: float = Field(0.2, gt=0, description="seconds between a batch's release steps")
    credits_per_usd: Decimal = Field(Decimal("1"), gt=0, description="credits a top-up of one US dollar buys")

    # OpenTelemetry's own variables, unprefixed as every OTel SDK reads them.
    # Only these four decide whether this process traces at all; the
    # exporter's other settings (headers, protocol, timeouts) and the sampler
    # (OTEL_TRACES_SAMPLER) are read by the SDK itself when tracing is on.
    otel_traces_exporter: str | None = Field(
        default=None, validation_alias="OTEL_TRACES_EXPORTER",
        description="otlp, console, or both comma-separated; none (or unset, with no OTLP endpoint): no tracing")
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="OTLP/HTTP collector, http://host:4318; setting it alone turns tracing on")
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        description="the collector's full traces URL, http://host:4318/v1/traces")
    otel_service_name: str | None = Field(
        default=None, validation_alias="OTEL_SERVICE_NAME",
        description="service.name of this process's spans (default: gatewayz-<role>)")
    otel_sdk_disabled: bool = Field(
        default=False, validation_alias="OTEL_SDK_DISABLED")
    # The batching of exports (``scheduler/tracing.py`` batches them itself,
    # not through the SDK's processor), under the SDK's own names. Batches
    # are four times the SDK's default: a post costs about 0.6 ms of CPU
    # however few spans it carries, on the thread that shares the GIL with
    # the event loop (1.2 us a span at 512, 0.3 us at 2048).
    otel_bsp_schedule_delay: int = Field(
        default=5000, gt=0, validation_alias="OTEL_BSP_SCHEDULE_DELAY",
        description="ms between two exports of the spans recorded since (sooner when a batch is full)")
    otel_bsp_max_export_batch_size: int = Field(
        default=2048, gt=0, validation_alias="OTEL_BSP_MAX_EXPORT_BATCH_SIZE", description="spans per export, at most")
    otel_bsp_max_queue_size: int = Field(
        default=8192, gt=0, validation_alias="OTEL_BSP_MAX_QUEUE_SIZE",
        description="spans waiting for export, at most; more are dropped until the exporter catches up")

    @field_validator("otel_traces_exporter")
    @classmethod
    def _known_exporters(cls, value: str | None) -> str | None:
        if value is None:
            return None
        unknown = set(trace_exporters(value)) - {"otlp", "console", "none"}
        if unknown:
            raise ValueError(f"unknown trace exporter {', '.join(sorted(unknown))}: use otlp, console or none")
        return value

    @property
    def span_exporters(self) -> tuple[str, ...]:
        """The span exporters this process uses; empty: it makes no spans.
        Off unless configured (the OTel default of ``otlp`` is not assumed:
        a gateway with no collector must not pay for spans)."""
        if self.otel_sdk_disabled:
            return ()
        if self.otel_traces_exporter is not None:
            return tuple(name for name in trace_exporters(self.otel_traces_exporter) if name != "none")
        if self.otel_exporter_otlp_endpoint or self.otel_exporter_otlp_traces_endpoint:
            return ("otlp",)
        return ()

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'gatewayz.db').resolve()}"

    @property
    def embedded_database(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")


def trace_exporters(value: str) -> list[str]:
    """``OTEL_TRACES_EXPORTER``'s names: comma-separated, case and spaces ignored."""
    return [name.strip().lower() for name in value.split(",") if name.strip()]
