"""Coupon requests: what an admin creates and what a user redeems.

Codes are case-insensitive (kept upper-case); credits are exact decimals
that must be a whole number of micro-credits, at most a billion.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from schema.keys import MAX_CREDITS, UtcTime, whole_micros
from schema.money import MicroCredits, credits_json_schema, credits_to_micros
from schema.openapi import STRIPPED
from schema.tables import MAX_INTEGER


def normalize_code(code: str) -> str:
    return code.strip().upper()


def _normalize(code: object) -> object:
    return normalize_code(code) if isinstance(code, str) else code


def iso_time(seconds: float | None) -> str | None:
    """Unix seconds as an ISO 8601 UTC string, for API output."""
    return datetime.fromtimestamp(seconds, UTC).isoformat() if seconds is not None else None


CouponCode = Annotated[str, BeforeValidator(_normalize), Field(pattern=r"^[A-Z0-9_-]{1,64}$"),
                      WithJsonSchema({"type": "string", "pattern": f"^[{STRIPPED}]*[A-Za-z0-9_-]{{1,64}}[{STRIPPED}]*$",
                                      "description": "Case-insensitive; spaces around it are ignored."})]


class NewCoupon(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: CouponCode
    credits: Annotated[Decimal, Field(gt=0, le=MAX_CREDITS), AfterValidator(whole_micros),
                       WithJsonSchema(credits_json_schema(Decimal(0), MAX_CREDITS, zero=False))]
    max_redemptions: int | None = Field(None, ge=1, le=MAX_INTEGER)
    expires_at: UtcTime | None = None  # ISO 8601 or unix seconds; naive is UTC
    trial_days: int | None = Field(None, ge=1, le=3650)

    @property
    def credits_micros(self) -> MicroCredits:
        return credits_to_micros(self.credits)


class CouponRedemptionRequest(BaseModel):
    code: CouponCode
