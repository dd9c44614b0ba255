"""Per-key spending limits, expiry and revocation in both modes, as a client
and an operator see them: a burst stops exactly at a key's limit, the 402
names the limit and what is left, and changes through the admin API take
effect at once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import openai
import pytest

from billing.limits import KeyLimits
from tests.support.clock import clear_of_midnight
from tests.support.gateway import ADMIN_TOKEN, Gateway

# As in test_admission: worst case = cost = 8 micro-credits.
REQUEST = {"model": "fake-output-priced", "max_tokens": 4, "messages": [{"role": "user", "content": "a b c"}]}
COST = 8
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(autouse=True)
def one_utc_day() -> None:
    """Each test's requests and spend fall in one UTC day (and month)."""
    clear_of_midnight()


def chat(gateway: Gateway, key: str, **overrides: Any) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}/chat/completions", json={**REQUEST, **overrides},
                      headers={"authorization": f"Bearer {key}"}, timeout=30)


def admin_key(gateway: Gateway, key_id: int | str) -> httpx.Response:
    return httpx.get(f"{gateway.url}/admin/keys/{key_id}", headers=ADMIN)


def patch_key(gateway: Gateway, key_id: int | str, body: Any, *, headers: dict[str, str] = ADMIN) -> httpx.Response:
    return httpx.patch(f"{gateway.url}/admin/keys/{key_id}", json=body, headers=headers)


def error_of(response: httpx.Response) -> tuple[int, str, str | None]:
    error = response.json()["error"]
    return response.status_code, error["type"], error["code"]


@pytest.mark.parametrize("kind", ["daily", "monthly", "total"])
def test_a_burst_on_a_key_stops_exactly_at_its_limit(gateway: Gateway, kind: str) -> None:
    # The account could pay for all of them; the key's limit affords ten.
    key = gateway.create_key("1", limits=KeyLimits(**{kind: 10 * COST}))

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60, limits=httpx.Limits(max_connections=40),
                                     headers={"authorization": f"Bearer {key}"}) as client:
            return await asyncio.gather(*(client.post("/chat/completions", json=REQUEST) for _ in range(40)))

    responses = asyncio.run(burst())
    assert Counter(response.status_code for response in responses) == {200: 10, 402: 30}
    refused = {error_of(r) for r in responses if r.status_code == 402}
    assert refused == {(402, "insufficient_quota", "key_limit_exceeded")}
    assert gateway.wait_until_settled(key) == 0
    assert gateway.balance(key) == 1_000_000 - 10 * COST
    spend = admin_key(gateway, gateway.key_id(key)).json()["spend"]
    assert spend == {"day": "0.000080", "month": "0.000080", "total": "0.000080"}
    assert chat(gateway, key).status_code == 402, "settled, the limit is still spent"
    assert gateway.reconcile(key) == []


def test_402_names_the_limit_and_what_is_left(gateway: Gateway) -> None:
    key = gateway.create_key("1", limits=KeyLimits(daily=10))
    client = openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(**{**REQUEST, "max_tokens": 1000})
    assert raised.value.status_code == 402
    assert raised.value.code == "key_limit_exceeded"
    assert ("can cost up to 0.002000 credits and this key's daily limit of 0.000010 credits has 0.000010 left "
            "until 00:00 UTC") in raised.value.message
    client.chat.completions.create(**REQUEST)
    assert gateway.wait_for_balance(key, 1_000_000 - COST) == 1_000_000 - COST
    refused = chat(gateway, key)
    assert error_of(refused)[2] == "key_limit_exceeded"
    assert "has 0.000002 left" in refused.json()["error"]["message"]
    assert gateway.balance(key) == 1_000_000 - COST, "refusals move no money"
    assert gateway.held(key) == 0


def test_an_expired_key_is_refused_saying_so(gateway: Gateway) -> None:
    expired = gateway.create_key("1", expires_at=time.time() - 1)
    client = openai.OpenAI(api_key=expired, base_url=gateway.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(**REQUEST)
    assert raised.value.code == "api_key_expired"
    assert "This API key expired at" in raised.value.message

    expires_at = time.time() + 1
    soon = gateway.create_key("1", expires_at=expires_at)
    assert chat(gateway, soon).status_code == 200
    time.sleep(max(expires_at - time.time(), 0) + 0.05)  # within the key cache's lifetime
    assert error_of(chat(gateway, soon)) == (401, "authentication_error", "api_key_expired")
    assert httpx.get(f"{gateway.url}/user/balance", headers={"authorization": f"Bearer {soon}"}).status_code == 401


def test_a_revoked_key_stops_at_once_and_for_good(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    assert chat(gateway, key).status_code == 200  # now in the key cache
    key_id = gateway.key_id(key)
    revoked = patch_key(gateway, key_id, {"revoked": True})
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked"] is True and revoked.json()["revoked_at"] is not None
    response = chat(gateway, key)
    assert error_of(response) == (401, "authentication_error", "api_key_revoked")
    assert "revoked" in response.json()["error"]["message"]
    # This process's key cache forgot it too (other processes: within 10 s).
    assert httpx.get(f"{gateway.url}/user/balance", headers={"authorization": f"Bearer {key}"}).status_code == 401
    assert error_of(patch_key(gateway, key_id, {"revoked": False}))[:2] == (400, "invalid_request_error")
    assert admin_key(gateway, key_id).json()["revoked"] is True
    assert gateway.reconcile(key) == []


def test_limits_and_expiry_change_through_the_admin_api(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    key_id = gateway.key_id(key)
    assert chat(gateway, key).status_code == 200
    assert gateway.wait_for_balance(key, 1_000_000 - COST) == 1_000_000 - COST

    # A first limit starts from what the key already spent.
    limited = patch_key(gateway, key_id, {"daily_limit": "0.000020", "monthly_limit": "5"})
    assert limited.status_code == 200, limited.text
    body = limited.json()
    assert body["limits"] == {"daily": "0.000020", "monthly": "5.000000", "total": None}
    assert body["spend"] == {"day": "0.000008", "month": "0.000008", "total": "0.000008"}
    assert chat(gateway, key).status_code == 200
    assert "has 0.000004 left" in chat(gateway, key).json()["error"]["message"]

    cleared = patch_key(gateway, key_id, {"daily_limit": None})
    assert cleared.json()["limits"] == {"daily": None, "monthly": "5.000000", "total": None}
    assert chat(gateway, key).status_code == 200
    unlimited = patch_key(gateway, key_id, {"monthly_limit": None})
    assert unlimited.json()["spend"] is None

    past = patch_key(gateway, key_id, {"expires_at": time.time() - 1})
    assert past.status_code == 200
    assert error_of(chat(gateway, key))[2] == "api_key_expired"
    assert patch_key(gateway, key_id, {"expires_at": None}).json()["expires_at"] is None
    assert chat(gateway, key).status_code == 200
    assert gateway.wait_until_settled(key) == 0
    assert gateway.balance(key) == 1_000_000 - 4 * COST
    assert gateway.reconcile(key) == []


@pytest.mark.parametrize("body", [
    {"daily_limit": "-1"}, {"monthly_limit": "1e30"}, {"total_limit": "0.0000001"}, {"daily_limit": "lots"},
    {"daily_limit": "NaN"}, {"total_limit": "Infinity"}, {"revoked": False}, {"expires_at": "tomorrow"},
    {"surprise": 1}, ["daily_limit"],
])
def test_a_bad_key_change_is_refused_and_changes_nothing(gateway: Gateway, body: Any) -> None:
    key = gateway.create_key("1", limits=KeyLimits(daily=100))
    key_id = gateway.key_id(key)
    before = admin_key(gateway, key_id).json()
    assert error_of(patch_key(gateway, key_id, body))[:2] == (400, "invalid_request_error")
    assert admin_key(gateway, key_id).json() == before


@pytest.mark.parametrize(("key_id", "status"), [(2_000_000_000, 404), (0, 400), ("abc", 400), (2**31, 400)])
def test_an_unknown_key_is_404_and_a_bad_id_400(gateway: Gateway, key_id: int | str, status: int) -> None:
    assert admin_key(gateway, key_id).status_code == status
    response = patch_key(gateway, key_id, {"revoked": True})
    assert response.status_code == status
    if status == 404:
        assert error_of(response) == (404, "invalid_request_error", "key_not_found")


def test_a_key_change_needs_the_admin_token(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    key_id = gateway.key_id(key)
    assert patch_key(gateway, key_id, {"revoked": True}, headers={}).status_code == 401
    assert patch_key(gateway, key_id, {"revoked": True}, headers={"authorization": "Bearer wrong"}).status_code == 403
    assert patch_key(gateway, key_id, {"revoked": True}, headers={"authorization": f"Bearer {key}"}).status_code == 403
    assert chat(gateway, key).status_code == 200, "still usable"
