"""Account requests: paging through history, the filters of ``GET
/user/usage``, and an operator's credit adjustment."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from schema.keys import MAX_CREDITS, UtcTime, whole_micros
from schema.money import MicroCredits, credits_json_schema, credits_to_micros
from schema.tables import MAX_INTEGER

MAX_PAGE = 1000
MAX_ID = MAX_INTEGER  # ids are 32-bit integers in the database


class PageQuery(BaseModel):
    """Newest first: ``limit`` rows after ``cursor`` (the ``next_cursor`` of
    the previous page) or after skipping ``offset`` rows."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(None, pattern=r"^[1-9][0-9]{0,9}$")
    offset: int = Field(0, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        if self.cursor is not None and self.offset:
            raise ValueError("send either `cursor` or `offset`, not both")
        if self.cursor is not None and int(self.cursor) > MAX_ID:
            raise ValueError("`cursor` is not one this API returned")
        return self

    @property
    def cursor_id(self) -> int | None:
        return int(self.cursor) if self.cursor is not None else None


class UsageQuery(PageQuery):
    start: UtcTime | None = Field(None, description="inclusive; ISO 8601 or unix seconds")
    end: UtcTime | None = Field(None, description="exclusive; ISO 8601 or unix seconds")
    model: str | None = Field(None, min_length=1, max_length=200)
    key_id: int | None = Field(None, ge=1, le=MAX_ID)
    batch_id: str | None = Field(None, min_length=1, max_length=64, description="only this batch's lines")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError("`start` must be before `end`")
        return self


SignedCredits = Annotated[Decimal, Field(ge=-MAX_CREDITS, le=MAX_CREDITS), AfterValidator(whole_micros),
                          WithJsonSchema(credits_json_schema(-MAX_CREDITS, MAX_CREDITS, zero=False))]


class CreditAdjustment(BaseModel):
    """``POST /admin/accounts/{id}/credits``: a negative amount deducts."""

    model_config = ConfigDict(extra="forbid")

    amount: SignedCredits
    reason: str = Field(min_length=1, max_length=500)
    idempotency_key: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,100}$")

    @model_validator(mode="after")
    def _moves_credits(self) -> Self:
        if not self.amount:
            raise ValueError("`amount` must not be zero")
        return self

    @property
    def amount_micros(self) -> MicroCredits:
        return credits_to_micros(self.amount)
