"""Coupons in both modes: an admin creates them, each account redeems a code
once, limits hold under concurrency, and trial credits are spent first and
expire."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.gateway import ADMIN_TOKEN, Gateway

DAY = 86_400
# As in test_admission: 4 output tokens at 2.00 credits per million, no input price.
REQUEST = {"model": "fake-output-priced", "max_tokens": 4, "messages": [{"role": "user", "content": "a b c"}]}
COST = 8


def new_code() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def admin_post(gateway: Gateway, body: dict[str, Any], *, token: str | None = ADMIN_TOKEN) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(f"{gateway.url}/admin/coupons", json=body, headers=headers)


def create_coupon(gateway: Gateway, **fields: Any) -> dict[str, Any]:
    response = admin_post(gateway, {"code": new_code(), **fields})
    assert response.status_code == 201, response.text
    return response.json()


def redeem(gateway: Gateway, key: str, code: str) -> httpx.Response:
    return httpx.post(f"{gateway.url}/user/coupons/redeem", json={"code": code},
                      headers={"authorization": f"Bearer {key}"})


def error_of(response: httpx.Response) -> tuple[int, str, str | None]:
    error = response.json()["error"]
    return response.status_code, error["type"], error["code"]


def test_the_admin_api_takes_only_the_admin_token(gateway: Gateway) -> None:
    user_key = gateway.create_key("1")
    body = {"code": new_code(), "credits": "1"}
    assert error_of(admin_post(gateway, body, token=None))[:2] == (401, "authentication_error")
    assert error_of(admin_post(gateway, {"nonsense": True}, token=None))[0] == 401, "no details before auth"
    refused = admin_post(gateway, body, token="not-the-admin-token")
    assert error_of(refused) == (403, "permission_error", "permission_denied")
    assert error_of(admin_post(gateway, body, token=user_key))[0] == 403
    lookup = httpx.get(f"{gateway.url}/admin/coupons/{body['code']}", headers={"authorization": f"Bearer {user_key}"})
    assert lookup.status_code == 403
    assert admin_post(gateway, body).status_code == 201


def test_a_coupon_credits_each_account_once(gateway: Gateway) -> None:
    first, second = gateway.create_key("1"), gateway.create_key("0")
    code = new_code()
    created = create_coupon(gateway, code=code, credits="2.5")
    assert created == {"object": "coupon", "code": code.upper(), "credits": "2.500000", "credits_micros": 2_500_000,
                       "max_redemptions": None, "redemptions": 0, "expires_at": None, "trial_days": None}

    response = redeem(gateway, first, code)
    assert response.status_code == 200, response.text
    assert response.json() == {"code": code.upper(), "credits": "2.500000", "credits_micros": 2_500_000,
                               "expires_at": None, "available": "3.500000", "available_micros": 3_500_000}
    again = redeem(gateway, first, code.upper())  # codes are case-insensitive
    assert error_of(again) == (409, "invalid_request_error", "coupon_already_redeemed")
    assert gateway.balance(first) == 3_500_000

    assert redeem(gateway, second, code).status_code == 200
    assert gateway.balance(second) == 2_500_000
    lookup = httpx.get(f"{gateway.url}/admin/coupons/{code}", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert lookup.json()["redemptions"] == 2
    assert gateway.reconcile(first, second) == []


def test_max_redemptions_holds_under_concurrent_redemption(gateway: Gateway) -> None:
    coupon = create_coupon(gateway, credits="1", max_redemptions=3)
    keys = [gateway.create_key("0") for _ in range(10)]

    async def rush() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            return await asyncio.gather(*(
                client.post("/user/coupons/redeem", json={"code": coupon["code"]},
                            headers={"authorization": f"Bearer {key}"})
                for key in keys
            ))

    responses = asyncio.run(rush())
    assert Counter(response.status_code for response in responses) == {200: 3, 400: 7}
    assert {error_of(r)[2] for r in responses if r.status_code == 400} == {"coupon_exhausted"}
    assert sorted(gateway.balance(key) for key in keys) == [0] * 7 + [1_000_000] * 3
    assert gateway.reconcile(*keys) == []


def test_one_account_redeeming_at_once_many_times_is_credited_once(gateway: Gateway) -> None:
    coupon = create_coupon(gateway, credits="1", max_redemptions=5)
    key = gateway.create_key("0")

    async def rush() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30,
                                     headers={"authorization": f"Bearer {key}"}) as client:
            return await asyncio.gather(*(client.post("/user/coupons/redeem", json={"code": coupon["code"]})
                                          for _ in range(8)))

    statuses = Counter(response.status_code for response in asyncio.run(rush()))
    assert statuses == {200: 1, 409: 7}
    assert gateway.balance(key) == 1_000_000
    lookup = httpx.get(f"{gateway.url}/admin/coupons/{coupon['code']}",
                       headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert lookup.json()["redemptions"] == 1, "refused redemptions do not count"


def test_an_expired_or_unknown_coupon_grants_nothing(gateway: Gateway) -> None:
    key = gateway.create_key("0")
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    expired = create_coupon(gateway, credits="1", expires_at=past)
    assert expired["expires_at"] == datetime.fromisoformat(past).isoformat()
    assert error_of(redeem(gateway, key, expired["code"])) == (400, "invalid_request_error", "coupon_expired")
    assert error_of(redeem(gateway, key, new_code())) == (404, "invalid_request_error", "coupon_not_found")
    assert error_of(redeem(gateway, key, "not a code!"))[:2] == (400, "invalid_request_error")
    future = create_coupon(gateway, credits="1", expires_at=time.time() + 3600)
    assert redeem(gateway, key, future["code"]).status_code == 200
    assert gateway.balance(key) == 1_000_000
    assert gateway.reconcile(key) == []


@pytest.mark.parametrize("body", [
    {"credits": "0"}, {"credits": "-1"}, {"credits": "0.0000001"}, {"credits": "lots"}, {"credits": "NaN"},
    {"credits": "1", "max_redemptions": 0}, {"credits": "1", "trial_days": 0}, {"credits": "1", "surprise": 1},
    {"credits": "1", "code": "has space"}, {},
])
def test_a_bad_coupon_is_refused(gateway: Gateway, body: dict[str, Any]) -> None:
    response = admin_post(gateway, {"code": new_code(), **body})
    assert error_of(response)[:2] == (400, "invalid_request_error"), response.text


def test_a_code_is_created_once(gateway: Gateway) -> None:
    code = new_code()
    create_coupon(gateway, code=code, credits="1")
    assert error_of(admin_post(gateway, {"code": code.upper(), "credits": "5"})) == (409, "invalid_request_error",
                                                                                    "coupon_exists")


def test_trial_credits_are_spent_first_and_what_is_left_expires(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    coupon = create_coupon(gateway, credits="3", trial_days=1)
    assert coupon["trial_days"] == 1
    before = time.time()
    response = redeem(gateway, key, coupon["code"])
    assert response.status_code == 200, response.text
    expires_at = datetime.fromisoformat(response.json()["expires_at"]).timestamp()
    assert before + DAY - 5 <= expires_at <= time.time() + DAY + 5
    assert gateway.balance(key) == 4_000_000

    spent = httpx.post(f"{gateway.base_url}/chat/completions", json=REQUEST, headers={"authorization": f"Bearer {key}"},
                       timeout=30)
    assert spent.status_code == 200, spent.text
    assert gateway.wait_for_balance(key, 4_000_000 - COST) == 4_000_000 - COST

    assert gateway.expire_grants(now=time.time()) == 0, "not expired yet"
    assert gateway.balance(key) == 4_000_000 - COST
    assert gateway.expire_grants(now=time.time() + 2 * DAY) >= 1
    # The charge came out of the trial credits, so the account's own credit is whole.
    assert gateway.balance(key) == 1_000_000
    assert gateway.expire_grants(now=time.time() + 2 * DAY) == 0, "a grant expires once"
    assert gateway.balance(key) == 1_000_000
    assert gateway.reconcile(key) == []
