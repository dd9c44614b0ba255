"""Schemathesis hooks for ``tests/contract/test_openapi_fuzz.py``, loaded by
the ``schemathesis`` process it starts (``SCHEMATHESIS_HOOKS``); the test
passes the fuzzer's own key and account ids in the environment.

Each hook narrows the run only where the OpenAPI document cannot say what
the gateway does, or where a case would test the run's own setup rather
than the gateway; each says which.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import schemathesis
from pydantic import TypeAdapter, ValidationError

# The fake upstream really builds each vector it is asked for, in the test's
# own process: dimensions are the provider's to refuse, not the gateway's.
MAX_FAKE_DIMENSIONS = 3072
# The model each endpoint's requests name, when they name a valid one: a
# provider on loopback, with no translation (tests/conftest.py). Any other id
# is a valid request answered 404 (or 400, for a model of another kind), so
# without this no valid request would reach a worker.
MODELS = {
    "/v1/chat/completions": "fake-small",
    "/v1/messages": "claude-fake-small",
    "/v1/embeddings": "fake-embed",
    "/v1/images/generations": "fake-image",
}
_TIME = TypeAdapter(datetime)
MAX_QUEUE_HEADER = "x-gatewayz-max-queue-ms"
PICK_UP_MS = 60_000
CREDIT_FIELDS = frozenset({"credits", "amount", "daily_limit", "monthly_limit", "total_limit"})


def _own(name: str, value: object) -> bool:
    # Path parameters may come as strings or numbers, as generated.
    return str(value) == os.environ[name]


def _whole_numbers_as_integers(value: Any) -> Any:
    """JSON Schema's ``integer`` admits ``5.0``, which the gateway refuses on
    purpose (a float ``n`` once bypassed the credit hold; the document says
    so in words): whole numbers go out as JSON integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole_numbers_as_integers(item) for item in value]
    if isinstance(value, dict):
        return {name: _whole_numbers_as_integers(item) for name, item in value.items()}
    return value


def _promise_keepable(headers: dict[str, Any]) -> None:
    """A queue deadline shorter than a loaded test machine takes to hand a job
    to a worker is answered 504 `queue_timeout`, as it promises: the run's own
    choice, not a gateway error. Such deadlines get a minute more."""
    for name, value in headers.items():
        if name.lower() == MAX_QUEUE_HEADER:
            try:
                milliseconds = int(str(value).strip())
            except ValueError:
                return
            if 0 <= milliseconds < PICK_UP_MS:  # kept as generated: a number, or its text
                later = milliseconds + PICK_UP_MS
                headers[name] = later if isinstance(value, int) else str(later)
            return


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    # JSON bodies only: a form's fields go out as text anyway, and a form body
    # rebuilt here is taken by schemathesis for one the hook wrote, which voids
    # its allowance for unknown headers.
    if isinstance(case.body, (dict, list)) and case.media_type == "application/json":
        case.body = _whole_numbers_as_integers(case.body)
    if case.headers:
        _promise_keepable(case.headers)
    if context.operation is not None and context.operation.path == "/v1/messages/batches":
        _unique_custom_ids(case.body)
    model = MODELS.get(context.operation.path) if context.operation is not None else None
    if model is not None and isinstance(case.body, dict) and isinstance(case.body.get("model"), str) \
            and case.body["model"]:
        case.body["model"] = model  # a model id the document allows stays one; an invalid one is kept
    return case


def _unique_custom_ids(body: object) -> None:
    """A message batch's ``custom_id``s must differ (refused 400 naming the
    repeat, as Anthropic does); JSON Schema cannot say a property is unique
    across an array's items. A repeated one gets its index added (within
    its 64 characters)."""
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list):
        return
    seen: set[str] = set()
    for index, request in enumerate(requests):
        if isinstance(request, dict) and isinstance(request.get("custom_id"), str):
            custom_id = request["custom_id"]
            if custom_id in seen:
                suffix = f"_{index}"
                custom_id = request["custom_id"] = custom_id[:64 - len(suffix)] + suffix
            seen.add(custom_id)


def _finer_than_a_micro_credit(body: object) -> bool:
    """A credit amount sent as a JSON number with more than six decimals:
    refused (400), but JSON Schema cannot bound a number's decimals (the
    document says so in words; strings are described exactly)."""
    if not isinstance(body, dict):
        return False
    return any(isinstance(value, float) and Decimal(repr(value)).as_tuple().exponent < -6  # type: ignore[operator]
               for name, value in body.items() if name in CREDIT_FIELDS)


def _time(text: object) -> datetime | None:
    """A query time as the gateway reads it: ISO 8601 or unix seconds, naive ones UTC."""
    try:
        moment = _TIME.validate_python(str(text))
    except ValidationError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _crossed(query: dict[str, Any]) -> bool:
    """Constraints between query parameters, which OpenAPI cannot express (the
    operations' descriptions say them): `cursor` or `offset`, not both; `start`
    before `end`."""
    if query.get("cursor") is not None and query.get("offset") not in (None, 0, "0"):
        return True
    start, end = _time(query.get("start")), _time(query.get("end"))
    if start is not None and end is not None:
        return start >= end
    return False


@schemathesis.hook
def filter_case(context: schemathesis.HookContext, case: schemathesis.Case) -> bool:
    operation = context.operation
    if operation is None:
        return True
    method, path = operation.method.lower(), operation.path
    target = case.path_parameters or {}
    # The admin token may revoke or limit any key and deduct from any account:
    # not the ones the fuzzer itself spends with, or every later request would
    # be refused for a reason the run made (401, 402) rather than for its data.
    if method == "patch" and path == "/admin/keys/{key_id}" and _own("FUZZ_KEY_ID", target.get("key_id")):
        return False
    if path == "/admin/accounts/{account_id}/credits" and _own("FUZZ_ACCOUNT_ID", target.get("account_id")):
        return False
    if path == "/v1/embeddings" and isinstance(case.body, dict):
        dimensions = case.body.get("dimensions")
        if isinstance(dimensions, (int, float)) and dimensions > MAX_FAKE_DIMENSIONS:
            return False
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    return not (positive and (_finer_than_a_micro_credit(case.body) or _crossed(case.query or {})))
