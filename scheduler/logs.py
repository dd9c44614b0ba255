"""How every role's log lines look: one readable line per record (``text``)
or one JSON object per line (``json``, ``GATEWAYZ_LOG_FORMAT``), with the
job a line is about as a field of its own, and no secret in either.

The job is the one the current task is working on (``JOB_ID``, set by a
worker around each job and by billing around each dead letter), or one a
call names itself (``extra={"job_id": …}`` or ``{"job_ids": […]}``, for
lines about a batch). A record whose message is a dict (the ingress's
line per request, ``ingress.exchange``) is written as those fields: the
line is built once, by one ``orjson.dumps``.

Secrets are taken out of the formatted line, whatever logged them (a
library at debug level included): every secret the process was configured
with, any password in a URL, and anything shaped like a GatewayZ API key.
Redaction costs only lines that are written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from schema.settings import Settings

JOB_ID: ContextVar[str | None] = ContextVar("gatewayz_job_id", default=None)

REDACTED = "[redacted]"
# A password in a URL (scheme://user:password@host) and the gateway's own API keys.
_URL_PASSWORD = re.compile(r"(?<=://)([^:/@\s]*):[^@\s/]+@")
# A record's own attributes, and uvicorn's ``color_message`` (its message with terminal colours).
_FIELDS_SKIPPED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "color_message"}


class Redactor:
    """Takes ``secrets`` (exact strings) and ``patterns`` out of a line."""

    def __init__(self, secrets: Iterable[str], patterns: Iterable[re.Pattern[str]] = ()) -> None:
        # Longest first: a secret that contains another is taken out whole.
        self._secrets = sorted({secret for secret in secrets if len(secret) >= 4}, key=len, reverse=True)
        self._patterns = tuple(patterns)

    def __call__(self, line: str) -> str:
        for secret in self._secrets:
            if secret in line:
                line = line.replace(secret, REDACTED)
        if "://" in line:
            line = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", line)
        for pattern in self._patterns:
            line = pattern.sub(REDACTED, line)
        return line


class TextFormatter(logging.Formatter):
    """``time level logger: message``, a request's fields as ``name=value``,
    ``[job …]`` when the line is about a job."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, dict):
            record.msg = " ".join(f"{name}={value}" for name, value in record.msg.items() if value is not None)
        line = super().format(record)
        if (job := _job_of(record)) is not None and job not in line:
            line = f"{line} [job {job}]"
        return self._redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``,
    ``logger``, ``message`` (or a request's fields), ``job_id``, what a
    call passed in ``extra``, and ``exception`` with its traceback."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        if isinstance(record.msg, dict):
            fields.update(record.msg)
        else:
            fields["message"] = record.getMessage()
        for name, value in record.__dict__.items():  # what the call passed in ``extra``
            if name not in _FIELDS_SKIPPED:
                fields[name] = value
        if "job_id" not in fields and (job := JOB_ID.get()) is not None:
            fields["job_id"] = job
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return self._redact(orjson.dumps(fields, default=str).decode())


def _job_of(record: logging.LogRecord) -> str | None:
    job = getattr(record, "job_id", None)
    return str(job) if job is not None else JOB_ID.get()


def configure_logging(settings: Settings, *, secrets: Iterable[str] = (),
                      patterns: Iterable[re.Pattern[str]] = ()) -> None:
    """The process's one log handler (standard error), in the settings'
    format and level; ``secrets`` beyond the settings' own (provider keys)
    and ``patterns`` (API keys) are redacted too."""
    redact = Redactor([*settings_secrets(settings), *secrets], patterns)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(redact) if settings.log_format == "json" else TextFormatter(redact))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)


def settings_secrets(settings: Settings) -> list[str]:
    """The secrets a process's settings hold: tokens, and the passwords of its service URLs."""
    found = [secret.get_secret_value() for secret in (settings.admin_token, settings.stripe_webhook_secret)
             if secret is not None]
    if settings.key_secret:
        found.append(settings.key_secret)
    for url in (settings.broker_url, settings.redis_url, settings.rate_limit_redis_url, settings.database_url):
        if url and (match := re.search(r"://[^:/@\s]*:([^@\s/]+)@", url)):
            found.append(match.group(1))
    return found
