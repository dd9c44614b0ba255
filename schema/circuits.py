"""The shared state of one circuit breaker, as every worker and ingress sees
it: the record a breaker store keeps per provider (``acme``) and per
provider and model (``acme/small-v2``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

CircuitState = Literal["closed", "open", "half-open"]

# How far back "recent failures" look, and how many of them a record keeps.
RECENT_WINDOW = 300.0
RECENT_KEPT = 100


class CircuitRecord(BaseModel):
    """pybreaker's state (``state``, its consecutive ``failures`` and
    half-open ``successes``, ``opened_at``), when the half-open probe was let
    through, and passive health: the times of recent failures and the last
    error. ``version`` grows by one with every write (compare-and-set)."""

    state: CircuitState = "closed"
    failures: int = Field(0, ge=0)
    successes: int = Field(0, ge=0)
    opened_at: float | None = None
    probe_at: float | None = None
    recent: list[float] = []
    last_error: str | None = None
    last_error_at: float | None = None
    version: int = Field(0, ge=0)

    def recent_failures(self, now: float) -> int:
        return sum(1 for at in self.recent if at > now - RECENT_WINDOW)

    def note_failure(self, now: float, error: str) -> None:
        self.recent = [at for at in self.recent if at > now - RECENT_WINDOW][-(RECENT_KEPT - 1):] + [now]
        self.last_error, self.last_error_at = error, now
