"""The ``[plans]`` and ``[rate_limits]`` config sections: what a config that
says nothing gets, and the errors a bad one gets."""

from __future__ import annotations

import pytest

from schema.catalog import ConfigError, parse_config
from schema.plans import PlanSpec, RateLimit


def test_a_config_without_plans_is_unthrottled_at_standard() -> None:
    config = parse_config({}, {})
    assert config.plans == {"default": PlanSpec(name="default")}
    assert config.plans["default"].priority == "standard"
    assert config.rate_limits.default_plan == "default"
    assert config.rate_limits.account == config.rate_limits.system == RateLimit()


def test_plans_a_default_plan_and_shared_limits() -> None:
    config = parse_config({
        "plans": {"free": {"requests_per_minute": 20, "tokens_per_minute": 40_000},
                  "default": {"requests_per_minute": 60, "priority": "bulk"}},
        "rate_limits": {"default_plan": "free", "account": {"requests_per_minute": 100},
                        "system": {"tokens_per_minute": 5_000_000}},
    }, {})
    assert config.plans["free"] == PlanSpec(name="free", requests_per_minute=20, tokens_per_minute=40_000)
    assert config.plans["default"].priority == "bulk", "a config may redefine the default plan"
    assert config.rate_limits.default_plan == "free"
    assert config.rate_limits.account.requests_per_minute == 100
    assert config.rate_limits.system.tokens_per_minute == 5_000_000


@pytest.mark.parametrize(("document", "says"), [
    ({"rate_limits": {"default_plan": "gold"}}, "default_plan 'gold' is not a plan; known: default"),
    ({"plans": {"free": {"priority": "urgent"}}}, "Input should be 'realtime', 'standard' or 'bulk'"),
    ({"plans": {"free": {"requests_per_minute": 0}}}, "greater than or equal to 1"),
    ({"plans": {"free": {"tokens_per_min": 10}}}, "tokens_per_min"),
    ({"plans": {"two words": {}}}, "String should match pattern"),
    ({"rate_limits": {"accounts": {"requests_per_minute": 5}}}, "accounts"),
    ({"rate_limits": {"system": {"requests_per_minute": -1}}}, "greater than or equal to 1"),
])
def test_a_bad_plan_or_limit_refuses_the_config(document: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        parse_config(document, {})
