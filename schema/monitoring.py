"""The monitoring API's query parameters: windows and buckets in seconds,
within bounds, so a bad one is refused (400) before it reaches a query."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schema.accounts import MAX_ID, PageQuery

MAX_WINDOW = 90 * 86400  # what the rollups are read over at most


class WindowQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: int = Field(3600, ge=60, le=MAX_WINDOW, description="seconds back from now")


class RankingQuery(WindowQuery):
    window: int = Field(86400, ge=60, le=MAX_WINDOW, description="seconds back from now")
    limit: int = Field(10, ge=1, le=100)


class LatencyRankingQuery(RankingQuery):
    sort: Literal["ttft", "throughput"] = "ttft"
    min_requests: int = Field(1, ge=1, le=1_000_000, description="models with fewer timed requests are left out")


class CostQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: int = Field(7 * 86400, ge=60, le=MAX_WINDOW)
    provider: str | None = Field(None, max_length=100)
    model: str | None = Field(None, max_length=200)
    account_id: int | None = Field(None, ge=1, le=MAX_ID)


class UptimeQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: int = Field(86400, ge=60, le=MAX_WINDOW)
    bucket: int = Field(3600, ge=60, le=86400, multiple_of=60, description="seconds per bar")
    threshold: float = Field(0.95, ge=0, le=1, description="a bucket below this availability is part of an incident")


class AnomalyQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recent: int = Field(300, ge=60, le=86400, description="the seconds judged")
    baseline: int = Field(3600, ge=60, le=7 * 86400, description="the seconds before them they are judged against")
    min_requests: int = Field(5, ge=1, le=1_000_000)


class RequestLogQuery(PageQuery):
    window: int = Field(86400, ge=60, le=MAX_WINDOW)
    provider: str | None = Field(None, max_length=100)
    model: str | None = Field(None, max_length=200)
    account_id: int | None = Field(None, ge=1, le=MAX_ID)
    key_id: int | None = Field(None, ge=1, le=MAX_ID)
    outcome: Literal["ok", "error"] | None = None
