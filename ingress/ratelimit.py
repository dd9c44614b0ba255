"""The rate limits of a request: which apply (its key's plan, its account,
the whole gateway), whether it is admitted, and what the client is told.

Every request counts one request and its tokens against each limit that
applies; tokens are counted at admission as the request's prompt bound plus
its maximum output (as OpenAI counts them, and with the bounds the credit
hold uses), and are not given back when the answer is shorter. A request
refused by any limit takes nothing from the others. An admitted response
carries OpenAI's ``x-ratelimit-*`` headers for the tightest limit of each
unit (and Anthropic's ``anthropic-ratelimit-*`` on its dialect); a refused
one gets 429 with ``retry-after``, in the dialect's error format.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from billing.ledger import KeyOwner
from ingress.limiter import BucketState, Decision, Limit, Limiter
from schema.errors import RateLimited, UnknownPlan
from schema.jobs import ClientDialect, Usage
from schema.plans import PlanSpec, RateLimit, RateLimitsSpec

log = logging.getLogger(__name__)

Scope = Literal["key", "account", "system"]
Unit = Literal["requests", "tokens"]
UNITS: tuple[Unit, ...] = ("requests", "tokens")
_PER_MINUTE = {"requests": "requests per min (RPM)", "tokens": "tokens per min (TPM)"}


def estimated_tokens(bound: Usage) -> int:
    """What a request counts against tokens-per-minute limits: its
    worst-case input and output, as admission bounds them."""
    return bound.input_tokens + bound.output_tokens


@dataclass(frozen=True, slots=True)
class AppliedLimit:
    scope: Scope
    unit: Unit
    limit: Limit


class RateLimits:
    def __init__(self, plans: Mapping[str, PlanSpec], config: RateLimitsSpec, limiter: Limiter) -> None:
        self._plans = plans
        self._config = config
        self._limiter = limiter
        self._unknown: set[str] = set()

    @property
    def mode(self) -> str:
        return self._limiter.mode

    def check_plan(self, name: str | None) -> None:
        """Refuse a plan name the config does not have (``None``: the default plan)."""
        if name is not None and name not in self._plans:
            raise UnknownPlan(f"Unknown plan {name!r}: the config has {', '.join(sorted(self._plans))}",
                              param="plan")

    def plan_of(self, owner: KeyOwner) -> PlanSpec:
        """The key's plan; the default plan for a key without one, or whose
        plan is no longer in the config (said once per plan name)."""
        default = self._plans[self._config.default_plan]
        if owner.plan is None:
            return default
        plan = self._plans.get(owner.plan)
        if plan is None:
            if owner.plan not in self._unknown:
                self._unknown.add(owner.plan)
                log.warning("keys on plan %r, which the config no longer has, get the default plan %r",
                            owner.plan, default.name)
            return default
        return plan

    def applicable(self, owner: KeyOwner, plan: PlanSpec, tokens: int) -> list[AppliedLimit]:
        scopes: list[tuple[Scope, str, RateLimit]] = [
            ("key", f"key:{owner.key_id}", plan),
            ("account", f"account:{owner.account_id}", self._config.account),
            ("system", "system", self._config.system),
        ]
        applied: list[AppliedLimit] = []
        for scope, bucket, limits in scopes:
            per_unit: tuple[tuple[Unit, int | None, int], ...] = (
                ("requests", limits.requests_per_minute, 1), ("tokens", limits.tokens_per_minute, tokens))
            for unit, capacity, cost in per_unit:
                if capacity is not None:
                    applied.append(AppliedLimit(scope, unit, Limit(f"{bucket}:{unit}", capacity, cost)))
        return applied

    async def admit(self, owner: KeyOwner, plan: PlanSpec, tokens: int, *,
                    dialect: ClientDialect = "openai") -> dict[str, str]:
        """Take the request from every limit that applies, or raise
        ``RateLimited`` taking nothing; returns the response's headers."""
        applied = self.applicable(owner, plan, tokens)
        if not applied:
            return {}
        decision = await self._limiter.consume([item.limit for item in applied])
        headers = limit_headers(applied, decision.states, dialect)
        if not decision.allowed:
            raise _refusal(applied, decision, plan, headers)
        return headers


def _describe(scope: Scope, plan: PlanSpec) -> str:
    return {"key": f"this API key (plan `{plan.name}`)", "account": "this account",
            "system": "the gateway (all accounts)"}[scope]


def _refusal(applied: Sequence[AppliedLimit], decision: Decision, plan: PlanSpec,
             headers: dict[str, str]) -> RateLimited:
    assert decision.refused_by is not None
    refused = applied[decision.refused_by]
    state = decision.states[decision.refused_by]
    what = f"{_PER_MINUTE[refused.unit]} on {_describe(refused.scope, plan)}"
    if math.isinf(decision.retry_after):
        message = (f"Request too large for {what}: Limit {refused.limit.capacity}, Requested {refused.limit.cost}. "
                   f"Lower max_tokens or shorten the prompt: a request counts its prompt plus its maximum output.")
        return RateLimited(message, type_=refused.unit, headers=headers, scope=refused.scope)
    message = (f"Rate limit reached for {what}: Limit {refused.limit.capacity}, "
               f"Used {refused.limit.capacity - state.remaining}, Requested {refused.limit.cost}. "
               f"Please try again in {duration(decision.retry_after)}.")
    return RateLimited(message, retry_after=decision.retry_after, type_=refused.unit, headers=headers,
                       scope=refused.scope)


def limit_headers(applied: Sequence[AppliedLimit], states: Sequence[BucketState],
                  dialect: ClientDialect) -> dict[str, str]:
    """For each unit, the tightest limit (fewest remaining): OpenAI's trio,
    and Anthropic's on its dialect (whose reset is a time, not a duration)."""
    headers: dict[str, str] = {}
    for unit in UNITS:
        candidates = [state for item, state in zip(applied, states, strict=True) if item.unit == unit]
        if not candidates:
            continue
        tightest = min(candidates, key=lambda state: (state.remaining, state.capacity))
        headers[f"x-ratelimit-limit-{unit}"] = str(tightest.capacity)
        headers[f"x-ratelimit-remaining-{unit}"] = str(tightest.remaining)
        headers[f"x-ratelimit-reset-{unit}"] = duration(tightest.reset)
        if dialect == "anthropic":
            reset_at = datetime.fromtimestamp(math.ceil(datetime.now(UTC).timestamp() + tightest.reset), UTC)
            headers[f"anthropic-ratelimit-{unit}-limit"] = str(tightest.capacity)
            headers[f"anthropic-ratelimit-{unit}-remaining"] = str(tightest.remaining)
            headers[f"anthropic-ratelimit-{unit}-reset"] = reset_at.isoformat().replace("+00:00", "Z")
    return headers


def duration(seconds: float) -> str:
    """OpenAI's way of writing a reset time: ``20ms``, ``1.5s``, ``6m0s``."""
    total = math.ceil(seconds * 1000)
    if total < 1000:
        return f"{total}ms"
    minutes, milliseconds = divmod(total, 60_000)
    rest = f"{milliseconds / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"
