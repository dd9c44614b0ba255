"""Rate limits in both modes, as clients see them: a burst stops exactly at
a key's plan, an account's or the gateway's limit; admitted responses say
where the tightest limits stand (OpenAI's headers); refusals are 429s in
the dialect's format with a retry-after, and take nothing (no credit, no
capacity from the other limits)."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from loadtests.fake_upstream import FakeUpstream
from schema.catalog import GatewayConfig, parse_config
from tests.conftest import MODES, UPSTREAM_KEY
from tests.support.gateway import ADMIN_TOKEN, Gateway, gateway_in_mode
from tests.support.processes import free_port

# As in test_admission: worst case = cost = 8 micro-credits.
REQUEST = {"model": "fake-output-priced", "max_tokens": 4, "messages": [{"role": "user", "content": "a b c"}]}
COST = 8
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
ACCOUNT_RPM = 8


def limited_config(upstream_url: str) -> GatewayConfig:
    document = {
        "providers": {
            "fake": {"adapter": "openai", "base_url": f"{upstream_url}/v1", "api_key_env": "FAKE_KEY"},
            # Nothing listens there: its jobs fail fast, before any output.
            "claude": {"adapter": "anthropic", "base_url": f"http://127.0.0.1:{free_port()}"},
        },
        "models": {
            "fake-output-priced": {"providers": ["fake"], "upstream_ids": {"fake": "fake-small"},
                                   "output_price_per_mtok": Decimal("2.00")},
            "claude/claude-test": {"providers": ["claude"], "input_price_per_mtok": Decimal("1.00"),
                                   "output_price_per_mtok": Decimal("2.00")},
        },
        "plans": {
            "tight": {"requests_per_minute": 5, "tokens_per_minute": 100_000},
            "roomy": {"requests_per_minute": 1000},
            "tokens": {"tokens_per_minute": 600},
        },
        # Keys without a plan get the built-in default plan: no limits of their own.
        "rate_limits": {"account": {"requests_per_minute": ACCOUNT_RPM}, "system": {"tokens_per_minute": 1_000_000}},
    }
    return parse_config(document, {"FAKE_KEY": UPSTREAM_KEY})


@pytest.fixture(scope="module", params=MODES)
def limited(request: pytest.FixtureRequest, upstream: FakeUpstream,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp(f"limited-{request.param}")
    # Claude's requests fail, but must not open its circuit: the ingress would refuse them before their limits.
    with gateway_in_mode(request.param, limited_config(upstream.url), data_dir,  # type: ignore[attr-defined]
                         admin_token=ADMIN_TOKEN, breaker_failures=1_000_000) as gateway:
        yield gateway


def tokens_of(request: dict[str, Any]) -> int:
    """What a request counts: its bytes (less model and stream) / 3, rounded up, plus max_tokens."""
    payload = {name: value for name, value in request.items() if name not in ("model", "stream")}
    return math.ceil(len(orjson.dumps(payload)) / 3) + request["max_tokens"]


def chat(gateway: Gateway, key: str, *, headers: dict[str, str] | None = None, **overrides: Any) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}/chat/completions", json={**REQUEST, **overrides},
                      headers={"authorization": f"Bearer {key}", **(headers or {})}, timeout=30)


def burst(gateway: Gateway, keys: list[str], count: int) -> list[httpx.Response]:
    """``count`` requests at once, spread over ``keys``."""
    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60,
                                     limits=httpx.Limits(max_connections=count)) as client:
            return await asyncio.gather(*(
                client.post("/chat/completions", json=REQUEST,
                            headers={"authorization": f"Bearer {keys[n % len(keys)]}"})
                for n in range(count)))

    return asyncio.run(send())


def test_a_burst_on_a_key_admits_exactly_its_plan(limited: Gateway) -> None:
    key = limited.create_key("1", plan="tight")
    responses = burst(limited, [key], 30)
    assert Counter(r.status_code for r in responses) == {200: 5, 429: 25}
    for refused in (r for r in responses if r.status_code == 429):
        error = refused.json()["error"]
        assert (error["type"], error["code"], error["param"]) == ("requests", "rate_limit_exceeded", None)
        assert error["message"].startswith(
            "Rate limit reached for requests per min (RPM) on this API key (plan `tight`): Limit 5, Used 5, "
            "Requested 1. Please try again in ")
        # One request comes back every 12 s.
        assert 1 <= int(refused.headers["retry-after"]) <= 12
        assert 0 < int(refused.headers["retry-after-ms"]) <= 12_000
        assert (refused.headers["x-ratelimit-limit-requests"], refused.headers["x-ratelimit-remaining-requests"]) \
            == ("5", "0")
    assert limited.wait_until_settled(key) == 0
    assert limited.balance(key) == 1_000_000 - 5 * COST, "refusals are never charged"


def test_the_rate_limit_is_checked_before_credit(limited: Gateway) -> None:
    broke = limited.create_key("0", plan="tight")
    answers = [chat(limited, broke) for _ in range(6)]
    # The first five are admitted by the limiter and refused for credit; the sixth never gets that far.
    assert [answer.status_code for answer in answers] == [402] * 5 + [429]
    # A request the limiter admitted says where its limits stand, even when its credit refuses it.
    assert [(answer.headers["x-ratelimit-limit-requests"], answer.headers["x-ratelimit-remaining-requests"])
            for answer in answers] == [("5", "4"), ("5", "3"), ("5", "2"), ("5", "1"), ("5", "0"), ("5", "0")]
    anthropic = httpx.post(f"{limited.base_url}/messages", json=REQUEST, timeout=30,
                           headers={"x-api-key": limited.create_key("0", plan="tight")})
    assert anthropic.status_code == 402 and anthropic.json()["error"]["type"] == "billing_error"
    assert (anthropic.headers["anthropic-ratelimit-requests-limit"],
            anthropic.headers["anthropic-ratelimit-requests-remaining"]) == ("5", "4")


def test_admitted_responses_say_where_the_tightest_limits_stand(limited: Gateway) -> None:
    tight = limited.create_key("1", plan="tight")
    first = chat(limited, tight)
    assert first.status_code == 200
    used = tokens_of(REQUEST)
    assert {name: value for name, value in first.headers.items() if name.startswith("x-ratelimit-")} == {
        "x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": "4", "x-ratelimit-reset-requests": "12s",
        # The key's 100,000 tokens a minute are tighter than the gateway's million.
        "x-ratelimit-limit-tokens": "100000", "x-ratelimit-remaining-tokens": str(100_000 - used),
        "x-ratelimit-reset-tokens": f"{math.ceil(used * 60 / 100_000 * 1000)}ms",
    }
    with httpx.stream("POST", f"{limited.base_url}/chat/completions", json={**REQUEST, "stream": True},
                      headers={"authorization": f"Bearer {tight}"}, timeout=30) as streamed:
        assert streamed.status_code == 200
        assert streamed.headers["x-ratelimit-remaining-requests"] == "3"
        assert b"data: [DONE]" in streamed.read()

    # A roomy plan leaves the account's limit the tightest; no key limit on tokens leaves the gateway's.
    roomy = chat(limited, limited.create_key("1", plan="roomy"))
    assert (roomy.headers["x-ratelimit-limit-requests"], roomy.headers["x-ratelimit-remaining-requests"]) \
        == (str(ACCOUNT_RPM), str(ACCOUNT_RPM - 1))
    assert roomy.headers["x-ratelimit-limit-tokens"] == "1000000"


def test_the_openai_sdk_reads_the_headers_and_raises_rate_limit_error(limited: Gateway) -> None:
    client = openai.OpenAI(api_key=limited.create_key("1", plan="tight"), base_url=limited.base_url, max_retries=0)
    remaining = []
    for _ in range(5):
        raw = client.chat.completions.with_raw_response.create(**REQUEST)
        assert raw.parse().choices[0].message.content == "Echo: a b c"
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["4", "3", "2", "1", "0"]
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(**REQUEST)
    assert (raised.value.status_code, raised.value.code, raised.value.type) == (429, "rate_limit_exceeded", "requests")
    assert 1 <= int(raised.value.response.headers["retry-after"]) <= 12
    assert "Please try again in" in raised.value.message


def test_tokens_per_minute_count_the_prompt_and_the_maximum_output(limited: Gateway) -> None:
    key = limited.create_key("1", plan="tokens")
    big = {**REQUEST, "max_tokens": 250}
    assert [chat(limited, key, max_tokens=250).status_code for _ in range(2)] == [200, 200]
    refused = chat(limited, key, max_tokens=250)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "tokens"
    assert re.fullmatch(rf"Rate limit reached for tokens per min \(TPM\) on this API key \(plan `tokens`\): "
                        rf"Limit 600, Used 5\d\d, Requested {tokens_of(big)}\. Please try again in \S+\.",
                        error["message"]), error["message"]
    assert refused.headers["x-ratelimit-limit-tokens"] == "600"
    # What is left still takes a smaller request.
    assert chat(limited, key, max_tokens=10).status_code == 200

    too_large = chat(limited, key, max_tokens=1000)
    assert too_large.status_code == 429
    assert too_large.json()["error"]["message"] == (
        f"Request too large for tokens per min (TPM) on this API key (plan `tokens`): Limit 600, Requested "
        f"{tokens_of({**REQUEST, 'max_tokens': 1000})}. Lower max_tokens or shorten the prompt: a request counts "
        f"its prompt plus its maximum output.")
    assert "retry-after" not in too_large.headers, "waiting would not help"


def test_an_accounts_limit_spans_its_keys(limited: Gateway) -> None:
    first = limited.create_key("1")
    account = limited.account_id(first)
    keys = [first, limited.create_key(account_id=account), limited.create_key(account_id=account)]
    responses = burst(limited, keys, 3 * ACCOUNT_RPM)
    assert Counter(r.status_code for r in responses) == {200: ACCOUNT_RPM, 429: 2 * ACCOUNT_RPM}
    assert {r.json()["error"]["message"].split(":")[0] for r in responses if r.status_code == 429} == {
        "Rate limit reached for requests per min (RPM) on this account"}
    assert chat(limited, limited.create_key("1")).status_code == 200, "another account is not limited"


def test_the_gateways_limit_spans_accounts(limited: Gateway) -> None:
    # Three of these fill the gateway's million tokens a minute, whoever sends them.
    statuses, refusal = [], None
    for _ in range(4):
        response = chat(limited, limited.create_key("1"), max_tokens=300_000)
        statuses.append(response.status_code)
        refusal = response
    assert statuses == [200, 200, 200, 429]
    assert refusal is not None
    assert refusal.json()["error"]["message"].startswith(
        "Rate limit reached for tokens per min (TPM) on the gateway (all accounts)")
    assert chat(limited, limited.create_key("1")).status_code == 200, "small requests still fit"


def test_the_anthropic_dialect_gets_its_own_429(limited: Gateway) -> None:
    key = limited.create_key("1", plan="tight")
    message = {"model": "claude/claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}

    async def five() -> list[int]:
        async with httpx.AsyncClient(base_url=limited.url, timeout=60, headers={"x-api-key": key}) as client:
            return [r.status_code for r in await asyncio.gather(*(client.post("/v1/messages", json=message)
                                                                   for _ in range(5)))]

    assert 429 not in asyncio.run(five()), "admitted (their provider then fails)"
    client = anthropic.Anthropic(api_key=key, base_url=limited.url, max_retries=0, timeout=30)
    with pytest.raises(anthropic.RateLimitError) as raised:
        client.messages.create(**message)
    body = raised.value.body
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert body["error"]["message"].startswith("Rate limit reached for requests per min (RPM)")  # type: ignore[index]
    headers = raised.value.response.headers
    assert 1 <= int(headers["retry-after"]) <= 12
    assert (headers["anthropic-ratelimit-requests-limit"], headers["anthropic-ratelimit-requests-remaining"]) \
        == ("5", "0")
    reset = datetime.fromisoformat(headers["anthropic-ratelimit-requests-reset"])
    assert 0 < reset.timestamp() - time.time() <= 61
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert limited.wait_until_settled(key) == 0


def test_a_keys_plan_changes_through_the_admin_api(limited: Gateway) -> None:
    key = limited.create_key("1")
    key_id = limited.key_id(key)
    assert chat(limited, key).headers["x-ratelimit-limit-requests"] == str(ACCOUNT_RPM)
    assert httpx.get(f"{limited.url}/admin/keys/{key_id}", headers=ADMIN).json()["plan"] is None

    changed = httpx.patch(f"{limited.url}/admin/keys/{key_id}", json={"plan": "tight"}, headers=ADMIN)
    assert changed.status_code == 200, changed.text
    assert changed.json()["plan"] == "tight"
    assert chat(limited, key).headers["x-ratelimit-limit-requests"] == "5"

    unknown = httpx.patch(f"{limited.url}/admin/keys/{key_id}", json={"plan": "platinum"}, headers=ADMIN)
    assert unknown.status_code == 400
    assert unknown.json()["error"] == {
        "message": "Unknown plan 'platinum': the config has default, roomy, tight, tokens",
        "type": "invalid_request_error", "param": "plan", "code": "unknown_plan"}
    assert httpx.get(f"{limited.url}/admin/keys/{key_id}", headers=ADMIN).json()["plan"] == "tight"

    cleared = httpx.patch(f"{limited.url}/admin/keys/{key_id}", json={"plan": None}, headers=ADMIN)
    assert cleared.json()["plan"] is None
    assert chat(limited, key).headers["x-ratelimit-limit-requests"] == str(ACCOUNT_RPM)


def test_an_unknown_priority_class_is_refused_and_takes_nothing(limited: Gateway) -> None:
    key = limited.create_key("1", plan="tight")
    refused = chat(limited, key, headers={"x-gatewayz-priority": "urgent"})
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "message": "Unknown priority class 'urgent': use one of realtime, standard, bulk",
        "type": "invalid_request_error", "param": "x-gatewayz-priority", "code": None}
    assert chat(limited, key).headers["x-ratelimit-remaining-requests"] == "4"


def test_health_says_where_limits_are_counted(limited: Gateway) -> None:
    health = httpx.get(f"{limited.url}/health").json()
    expected = "per-process" if limited.settings.redis_url is None else "shared: redis"
    assert health == {"status": "ok", "rate_limits": expected}


def test_a_gateway_without_limits_sends_no_limit_headers(gateway: Gateway) -> None:
    response = chat(gateway, gateway.create_key("1"))
    assert response.status_code == 200
    assert not [name for name in response.headers if name.startswith("x-ratelimit-")]
    assert response.headers["x-gatewayz-priority"] == "standard"

