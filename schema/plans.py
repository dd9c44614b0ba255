"""Plans and rate limits in the configuration (TOML ``[plans.NAME]`` and
``[rate_limits]``), validated.

A plan sets what a key may do per minute (requests and tokens) and the
priority class its jobs run at. A key names its plan (``api_keys.plan``);
a key without one is on ``[rate_limits] default_plan``. Account-wide and
system-wide limits apply on top of the key's plan, to every request. A
limit left out is no limit: with nothing configured the gateway is
unthrottled and every job runs at ``standard``.

```toml
[plans.free]
requests_per_minute = 20
tokens_per_minute = 40000
priority = "standard"

[rate_limits]
default_plan = "free"
account = { requests_per_minute = 600 }
system = { tokens_per_minute = 5000000 }
```
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Highest first. The scheduler maps each to a message priority
# (scheduler.priority); a request may lower its class, never raise it.
PriorityClass = Literal["realtime", "standard", "bulk"]
PRIORITY_CLASSES: tuple[PriorityClass, ...] = ("realtime", "standard", "bulk")

DEFAULT_PLAN = "default"
# Plan names are stored on keys (api_keys.plan is 64 characters).
PLAN_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class RateLimit(BaseModel):
    """Per minute; ``None`` is no limit. Tokens are counted at admission:
    the request's prompt bound plus its maximum output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: int | None = Field(None, ge=1, le=1_000_000_000)
    tokens_per_minute: int | None = Field(None, ge=1, le=1_000_000_000_000)


class PlanSpec(RateLimit):
    name: str = Field(pattern=PLAN_NAME)
    priority: PriorityClass = "standard"


class RateLimitsSpec(BaseModel):
    """``[rate_limits]``: the plan of keys without one, and the limits every
    account and the whole gateway share."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_plan: str = DEFAULT_PLAN
    account: RateLimit = RateLimit()
    system: RateLimit = RateLimit()


def with_default_plan(plans: Mapping[str, PlanSpec]) -> dict[str, PlanSpec]:
    """The configured plans, plus the built-in unlimited ``default`` plan
    unless the config defines its own."""
    return {DEFAULT_PLAN: PlanSpec(name=DEFAULT_PLAN), **plans}


def check_default_plan(plans: Mapping[str, PlanSpec], rate_limits: RateLimitsSpec) -> None:
    if rate_limits.default_plan not in plans:
        raise ValueError(f"[rate_limits] default_plan {rate_limits.default_plan!r} is not a plan; "
                         f"known: {', '.join(sorted(plans))}")
