"""Every number an endpoint takes, fed the boundary values, in both modes.

Each answer is a 2xx or a 4xx in the endpoint's error format, never a 5xx.
A 400 names the parameter (OpenAI's ``param``, or its message), except on the
Stripe webhook, whose refusals are its own (``invalid_webhook``). Where money
moves, a 4xx moves none: the account's balance is unchanged and a refused
Stripe event id was not recorded (its genuine delivery still credits).

``SITES`` is the table: one row per (method, path, where the number goes,
parameter), the completion, embeddings and images bodies' numbers included.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import httpx
import pytest

from tests.support.gateway import ADMIN_TOKEN, STRIPE_WEBHOOK_SECRET, Gateway

MAX_ID = 2**31 - 1
MAX_TOP_UP = 10**9 * 10**6

# JSON number literals: sent as they are in a body, as text in a path or a query.
NUMBERS = ["0", "-1", "1", "-0", "1.5", "-0.5", *map(str, (
    MAX_ID, MAX_ID + 1, 2**31, 2**53, 2**63, 2**64, 2**70, 10**16, -2**63 - 1, -2**70,
)), "1e308", "-1e308", "1e400", "-1e400", "1e-400", "9" * 5000]
# Not JSON, but Python's parser (which reads request bodies) lets them through.
NON_FINITE = ["NaN", "Infinity", "-Infinity"]
# Text a parameter may parse as a number (decimal credits, unix seconds, ids)
# or a time: the ends of datetime's range, pushed past them by an offset.
TEXTS = ["1e400", "1e999999", "1E+999999999", "1e-999999", "sNaN", "-NaN", "0x10", "1_000", " 1", "+1", "٣",
         "9999-12-31T23:59:59.9-23:59", "0001-01-01T00:00:00+23:59", "1969-12-31T23:59:59Z"]

BODY_VALUES = list(dict.fromkeys(NUMBERS + NON_FINITE + [json.dumps(text) for text in NUMBERS + NON_FINITE + TEXTS]))
TEXT_VALUES = list(dict.fromkeys(NUMBERS + NON_FINITE + TEXTS))

Where = Literal["path", "query", "body", "stripe", "signature"]


@dataclass(frozen=True)
class Site:
    """Where a number goes. ``path`` may hold ``{n}`` (the number, when it
    goes in the path), ``{account_id}`` and ``{key_id}`` (the test's fresh
    key's); ``base`` is the rest of a valid request, in which ``{code}`` is a
    new coupon code. ``stripe``: a field of a signed, paid checkout session
    (dotted inside it); ``signature``: the ``t`` of ``Stripe-Signature``."""

    method: str
    path: str
    where: Where
    name: str
    base: dict[str, Any] = field(default_factory=dict)
    admin: bool = False  # the admin token, else the fresh key
    # The account's balance moves only on a 2xx: by the answer's ``amount_micros``
    # (a credit adjustment), or by a credited top-up (the Stripe webhook).
    money: bool = False

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.where}:{self.name}"


CHAT = {"model": "fake-output-priced", "messages": [{"role": "user", "content": "a b c"}]}
MESSAGES = {"model": "claude-fake-small", "messages": [{"role": "user", "content": "a b c"}]}
ADJUSTMENT = {"reason": "boundary values"}
COUPON = {"code": "{code}", "credits": "1"}
PAID_TO_ACCOUNT = {"metadata": {"account_id": "{account_id}", "credits": "1"}}

SITES = [
    # The numbers the credit hold multiplies: a whole number in range, or 400 before anything is held.
    *(Site("POST", "/v1/chat/completions", "body", name, CHAT)
      for name in ("n", "max_tokens", "max_completion_tokens")),
    Site("POST", "/v1/messages", "body", "max_tokens", MESSAGES),
    Site("POST", "/v1/images/generations", "body", "n", {"model": "fake-image", "prompt": "a cat"}),
    Site("POST", "/v1/embeddings", "body", "dimensions", {"model": "fake-embed", "input": "a b c"}),
    *(Site("GET", "/user/usage", "query", name) for name in ("limit", "offset", "cursor", "start", "end", "key_id")),
    Site("GET", "/admin/accounts/{n}/ledger", "path", "account_id", admin=True),
    *(Site("GET", "/admin/accounts/{account_id}/ledger", "query", name, admin=True)
      for name in ("limit", "offset", "cursor")),
    # A deduction no account can cover: an id that exists (maybe another test's) is refused, not charged.
    Site("POST", "/admin/accounts/{n}/credits", "path", "account_id", {"amount": "-1000000000", **ADJUSTMENT},
         admin=True),
    Site("POST", "/admin/accounts/{account_id}/credits", "body", "amount", ADJUSTMENT, admin=True, money=True),
    Site("GET", "/admin/keys/{n}", "path", "key_id", admin=True),
    # An empty change: an id that exists (maybe another test's key) is left as it was.
    Site("PATCH", "/admin/keys/{n}", "path", "key_id", admin=True),
    *(Site("PATCH", "/admin/keys/{key_id}", "body", name, admin=True)
      for name in ("daily_limit", "monthly_limit", "total_limit", "expires_at")),
    Site("POST", "/admin/coupons", "body", "credits", {"code": "{code}"}, admin=True),
    *(Site("POST", "/admin/coupons", "body", name, COUPON, admin=True)
      for name in ("max_redemptions", "expires_at", "trial_days")),
    *(Site("GET", "/v1/models/search", "query", name)
      for name in ("max_input_price", "max_output_price", "min_context_length")),
    # One micro-credit: an id in range may be another test's account, credited by a balanced top-up.
    Site("POST", "/webhooks/stripe", "stripe", "metadata.account_id", {"metadata": {"credits": "0.000001"}},
         money=True),
    Site("POST", "/webhooks/stripe", "stripe", "client_reference_id", {"metadata": {"credits": "0.000001"}},
         money=True),
    Site("POST", "/webhooks/stripe", "stripe", "metadata.credits", {"metadata": {"account_id": "{account_id}"}},
         money=True),
    Site("POST", "/webhooks/stripe", "stripe", "amount_total", {"client_reference_id": "{account_id}",
                                                                "currency": "usd"}, money=True),
    Site("POST", "/webhooks/stripe", "signature", "t", PAID_TO_ACCOUNT, money=True),
]


@dataclass(frozen=True)
class Caller:
    key: str
    account_id: int
    key_id: int


def _filled(value: Any, caller: Caller) -> Any:
    if isinstance(value, dict):
        return {name: _filled(item, caller) for name, item in value.items()}
    if isinstance(value, str):
        return value.format(account_id=caller.account_id, key_id=caller.key_id,
                            code=f"edge-{uuid.uuid4().hex[:12]}")
    return value


def _with_number(base: dict[str, Any], dotted: str, literal: str) -> str:
    """``base`` as JSON with the raw JSON ``literal`` at ``dotted``."""
    marker = f"number-{uuid.uuid4().hex}"
    document = json.loads(json.dumps(base))
    *parents, last = dotted.split(".")
    inner = document
    for name in parents:
        inner = inner.setdefault(name, {})
    inner[last] = marker
    return json.dumps(document).replace(json.dumps(marker), literal)


def _stripe_event(session: str) -> tuple[str, str]:
    event_id = f"evt_{uuid.uuid4().hex}"
    return event_id, (f'{{"id": "{event_id}", "object": "event", "type": "checkout.session.completed", '
                      f'"data": {{"object": {session}}}}}')


def _signature(timestamp: str, payload: str) -> str:
    digest = hmac.new(STRIPE_WEBHOOK_SECRET.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _session(base: dict[str, Any]) -> dict[str, Any]:
    return {"object": "checkout.session", "id": f"cs_test_{uuid.uuid4().hex[:12]}", "payment_status": "paid", **base}


@dataclass(frozen=True)
class Sent:
    request: httpx.Request
    event_id: str | None = None  # a Stripe event's id


def build(gateway: Gateway, site: Site, literal: str, caller: Caller) -> Sent:
    """The request that puts ``literal`` (raw JSON in a body, text elsewhere) at ``site``."""
    base = _filled(site.base, caller)
    token = ADMIN_TOKEN if site.admin else caller.key
    headers: dict[str, str | bytes] = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    path = site.path.format(n="{n}", account_id=caller.account_id, key_id=caller.key_id)
    url = gateway.url + path.replace("{n}", literal if site.where == "path" else "")
    if site.where == "query":
        return Sent(httpx.Request(site.method, url, params={**base, site.name: literal}, headers=headers))
    if site.where == "signature":
        event_id, payload = _stripe_event(json.dumps(_session(base)))
        headers["stripe-signature"] = _signature(literal, payload).encode()  # bytes: "٣" too
        return Sent(httpx.Request(site.method, url, content=payload.encode(), headers=headers), event_id)
    if site.where == "stripe":
        event_id, payload = _stripe_event(_with_number(_session(base), site.name, literal))
        headers["stripe-signature"] = _signature(str(int(time.time())), payload)
        return Sent(httpx.Request(site.method, url, content=payload.encode(), headers=headers), event_id)
    content = _with_number(base, site.name, literal) if site.where == "body" else json.dumps(base)
    if site.method == "GET":
        return Sent(httpx.Request(site.method, url, headers=headers))
    return Sent(httpx.Request(site.method, url, content=content.encode(), headers=headers))


def _error_of(response: httpx.Response, site: Site) -> dict[str, Any] | None:
    """The error object, if the answer is in the endpoint's error format:
    Anthropic's on ``/v1/messages``, OpenAI's elsewhere."""
    try:
        body = response.json()
        error = body["error"]
        if site.path.startswith("/v1/messages"):
            assert body["type"] == "error" and set(error) == {"type", "message"}
            return {**error, "param": None, "code": None}
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and isinstance(error["type"], str)
        return error  # type: ignore[no-any-return]
    except (ValueError, KeyError, TypeError, AssertionError):
        return None


def problems_with(response: httpx.Response, site: Site) -> list[str]:
    """What is wrong with an answer a user could see: a 5xx, a 4xx not in the
    endpoint's error format, a 400 that does not say which parameter is wrong."""
    if response.status_code >= 500:
        return [f"{response.status_code}: {response.text[:300]}"]
    if response.status_code < 400:
        return []
    error = _error_of(response, site)
    if error is None:
        return [f"{response.status_code} not in the endpoint's error format: {response.text[:300]}"]
    if response.status_code != 400:
        return []
    if site.where in ("stripe", "signature"):
        if error["code"] not in ("invalid_webhook", "unknown_account"):
            return [f"a webhook refusal with code {error['code']!r}"]
        return []
    if site.where == "body" and error["param"] is None and "body" in error["message"]:
        return []  # the number made the body unreadable as JSON (Python reads at most 4300 digits)
    if error["param"] != site.name and site.name not in error["message"]:
        return [f"400 does not name {site.name!r}: {error}"]
    return []


REDELIVERY = "0.000001"  # credits: what a genuine delivery of a refused event's id credits


def redelivered(gateway: Gateway, event_id: str, caller: Caller) -> bool:
    """Whether the event id still credits, as a genuine delivery to the caller's account."""
    session = json.dumps(_session({"metadata": {"account_id": str(caller.account_id), "credits": REDELIVERY}}))
    payload = (f'{{"id": "{event_id}", "object": "event", "type": "checkout.session.completed", '
               f'"data": {{"object": {session}}}}}')
    response = httpx.post(f"{gateway.url}/webhooks/stripe", content=payload.encode(),
                          headers={"stripe-signature": _signature(str(int(time.time())), payload)})
    return response.status_code == 200 and response.json() == {"received": True, "credited": True}


def money_problems(gateway: Gateway, site: Site, sent: Sent, response: httpx.Response, caller: Caller,
                   before: int) -> tuple[list[str], int]:
    """What is wrong with how the balance moved (from ``before``), and the balance now."""
    after = gateway.balance(caller.key)
    if response.status_code >= 400:
        problems = [] if after == before else [f"refused with {response.status_code}, yet the balance moved "
                                                f"{before} -> {after}"]
        if sent.event_id is not None:
            if not redelivered(gateway, sent.event_id, caller):
                return [*problems, f"refused with {response.status_code}, yet its event id was recorded"], \
                    gateway.balance(caller.key)
            after += int(Decimal(REDELIVERY) * 10**6)
        return problems, after
    if site.where in ("stripe", "signature"):
        if response.json().get("received") is not True:
            return [f"a 2xx that is not a webhook receipt: {response.text[:300]}"], after
        moved = after - before
        return [] if 0 <= moved <= MAX_TOP_UP else [f"credited {moved} micro-credits"], after
    amount = response.json()["amount_micros"]
    return [] if after - before == amount else [f"answered {amount}, but the balance moved {before} -> {after}"], after


@pytest.mark.parametrize("site", SITES, ids=str)
def test_boundary_values_are_answered_or_refused_never_a_server_error(gateway: Gateway, site: Site) -> None:
    key = gateway.create_key("10")
    caller = Caller(key, gateway.account_id(key), gateway.key_id(key))
    values = BODY_VALUES if site.where in ("body", "stripe") else TEXT_VALUES
    problems: list[str] = []
    balance = gateway.balance(key)
    for literal in values:
        sent = build(gateway, site, literal, caller)
        # A connection each: the server closes one after a 500, which would fail the next value.
        with httpx.Client(timeout=30) as client:
            response = client.send(sent.request)
        found = problems_with(response, site)
        if site.money and not found:
            found, balance = money_problems(gateway, site, sent, response, caller, balance)
        elif site.money:
            balance = gateway.balance(key)
        problems += [f"{literal[:40]!s}: {problem}" for problem in found]
    assert problems == [], "\n".join(problems)
    assert gateway.reconcile(key) == []


QUEUE_HEADER = "x-gatewayz-max-queue-ms"
DIALECTS = {
    "/v1/chat/completions": {"model": "fake-output-priced", "max_tokens": 4,
                             "messages": [{"role": "user", "content": "a b c"}]},
    "/v1/messages": {"model": "claude-fake-small", "max_tokens": 4, "messages": [{"role": "user", "content": "a b c"}]},
}


@pytest.mark.parametrize("path", DIALECTS)
def test_the_queue_deadline_header_is_range_checked_in_each_dialect(gateway: Gateway, path: str) -> None:
    """The one number the completion endpoints read from a header: whole
    milliseconds from 0 to 2**31 - 1, else 400 before anything is held."""
    key = gateway.create_key("1")
    headers = {"authorization": f"Bearer {key}", "anthropic-version": "2023-06-01"}
    for value in ["-1", str(MAX_ID + 1), str(2**63), "1" + "0" * 400, "9" * 5000, "1e400", "1.5", "NaN", "Infinity"]:
        response = httpx.post(gateway.url + path, json=DIALECTS[path], headers={**headers, QUEUE_HEADER: value},
                              timeout=30)
        assert response.status_code == 400, (value[:40], response.text)
        if path == "/v1/messages":
            assert response.json()["type"] == "error"
            assert response.json()["error"]["type"] == "invalid_request_error"
        else:
            assert response.json()["error"]["param"] == QUEUE_HEADER
        assert QUEUE_HEADER in response.json()["error"]["message"]
    assert gateway.balance(key) == 1_000_000 and gateway.held(key) == 0
    response = httpx.post(gateway.url + path, json=DIALECTS[path], headers={**headers, QUEUE_HEADER: str(MAX_ID)},
                          timeout=30)
    assert response.status_code == 200, response.text
