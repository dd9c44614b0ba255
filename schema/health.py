"""How a provider has been doing lately, as every worker, prober and ingress
sees it: the outcomes a health store keeps per provider, from two sources —
``requests`` (each upstream attempt a worker made for a client) and
``probe`` (the active prober's cheap calls)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

HealthSource = Literal["requests", "probe"]
HEALTH_SOURCES: tuple[HealthSource, ...] = ("requests", "probe")
ProbeKind = Literal["models", "chat"]

# How many outcomes per provider and source are kept, and for how long:
# "recent" is whichever is shorter.
OUTCOMES_KEPT = 50
OUTCOMES_WINDOW = 900.0


class Outcome(BaseModel):
    """One upstream call: when it ended, whether the provider did its part,
    how long it took and, when it failed, why (may quote the provider, so
    only the admin view shows it)."""

    at: float
    ok: bool
    latency: float = Field(ge=0, description="seconds")
    error: str | None = None
