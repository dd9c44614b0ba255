"""Key requests: the limits, expiry and plan an operator sets on an API key
(``PATCH /admin/keys/{id}``, ``gatewayz keys create``).

Limits are exact decimal credits, a whole number of micro-credits, from 0
(the key may spend nothing) to a billion; ``null`` clears one. Times are ISO
8601 or unix seconds, naive ones UTC, from 1970 to 9999-12-30; durations are
like ``30d`` or ``12h``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema, field_validator

from schema.money import MicroCredits, credits_json_schema, credits_to_micros
from schema.plans import PLAN_NAME

MAX_CREDITS = Decimal(1_000_000_000)  # far from BIGINT overflow, whatever is summed
MAX_DURATION = 3650 * 86_400.0
# Times are kept as unix seconds and shown in ISO 8601. Ending a day short of
# datetime's year 9999 keeps any offset, or rounding to the second, in range.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
LIMIT_FIELDS = ("daily_limit", "monthly_limit", "total_limit")


def whole_micros(credits: Decimal) -> Decimal:
    credits_to_micros(credits)  # raises ValueError for a fraction of a micro-credit
    return credits


def utc(moment: datetime) -> datetime:
    """An aware time (a naive one is UTC) within ``EARLIEST``..``LATEST``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if not EARLIEST <= moment <= LATEST:
        raise ValueError(f"a time must be from {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d} UTC "
                         f"(unix seconds from 0 to {LATEST.timestamp():.0f})")
    return moment


CreditLimit = Annotated[Decimal, Field(ge=0, le=MAX_CREDITS), AfterValidator(whole_micros),
                        WithJsonSchema(credits_json_schema(Decimal(0), MAX_CREDITS))]
# What pydantic reads as a time: an ISO 8601 string (or unix seconds in a
# string), or a number of unix seconds, of milliseconds beyond 2e10.
TIME_JSON_SCHEMA = {
    "anyOf": [{"type": "string", "format": "date-time",
               "pattern": r"^(19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-"},
              {"type": "number", "minimum": 0, "maximum": LATEST.timestamp() * 1000}],
    "description": f"ISO 8601 (a time without a zone is UTC), or unix seconds (milliseconds beyond 2e10), "
                   f"from {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d}.",
}
UtcTime = Annotated[datetime, AfterValidator(utc), WithJsonSchema(TIME_JSON_SCHEMA)]


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``90m`` or ``45s`` as seconds; refuses anything else."""
    match = re.fullmatch(r"\s*(\d{1,7})\s*([smhd])\s*", text)
    seconds = int(match.group(1)) * _UNITS[match.group(2)] if match else 0
    if not 0 < seconds <= MAX_DURATION:
        raise ValueError(f"{text!r} is not a duration like 30d, 12h, 90m or 45s (at most 3650 days)")
    return float(seconds)


class KeyChange(BaseModel):
    """``PATCH /admin/keys/{id}``: only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    daily_limit: CreditLimit | None = None
    monthly_limit: CreditLimit | None = None
    total_limit: CreditLimit | None = None
    expires_at: UtcTime | None = None
    revoked: Annotated[bool | None, WithJsonSchema({"anyOf": [{"const": True}, {"type": "null"}]})] = None
    plan: str | None = Field(None, pattern=PLAN_NAME, description="a plan of the config; null: the default plan")

    @field_validator("revoked")
    @classmethod
    def _for_good(cls, revoked: bool | None) -> bool | None:
        if revoked is False:
            raise ValueError("a revoked key cannot be restored: only `true` is accepted")
        return revoked

    def values(self) -> dict[str, int | float | str | None]:
        """The key's columns to set: limits in micro-credits, expiry in unix seconds, plan."""
        changes: dict[str, int | float | str | None] = {}
        for name in self.model_fields_set & set(LIMIT_FIELDS):
            limit = getattr(self, name)
            changes[name] = credits_to_micros(limit) if limit is not None else None
        if "expires_at" in self.model_fields_set:
            changes["expires_at"] = self.expires_at.timestamp() if self.expires_at is not None else None
        if "plan" in self.model_fields_set:
            changes["plan"] = self.plan
        return changes


_limit = TypeAdapter(CreditLimit)


def limit_micros(credits: str) -> MicroCredits:
    """A limit typed by an operator (the CLI), validated like the API's;
    raises ``pydantic.ValidationError``."""
    return credits_to_micros(_limit.validate_python(credits))
