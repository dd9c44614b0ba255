"""OpenAI chat-completions requests: the checks the gateway itself needs.

Every number the credit hold multiplies (``n``, ``max_tokens``,
``max_completion_tokens``) must be a whole number in its range: the hold is
the most a request may cost, so a value it cannot read (``n: 50.0``) is
refused rather than passed upstream uncounted. The body is otherwise passed
through untouched (extra fields, tools, response formats …): the upstream is
the authority on what it accepts.
"""

from __future__ import annotations

from schema.errors import InvalidRequest
from schema.jobs import DialectObject

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_TOKENS_LIMIT = 10_000_000
MAX_CHOICES = 128  # OpenAI's own limit on ``n``


def whole(value: object, low: int, high: int) -> bool:
    """An integer (not a bool, not a float that looks like one) from ``low`` to ``high``."""
    return type(value) is int and low <= value <= high


def check_chat_request(body: object) -> DialectObject:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("`model` is required and must be a non-empty string", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("`messages` must be a non-empty array", param="messages")
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if not isinstance(role, str) or role not in ROLES:  # an object or array role is unhashable
            raise InvalidRequest(
                f"messages[{index}] must be an object whose `role` is one of {sorted(ROLES)}",
                param=f"messages.{index}.role",
            )
    if not isinstance(body.get("stream", False), bool):
        raise InvalidRequest("`stream` must be a boolean", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("`stream_options` must be an object", param="stream_options")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and not whole(value, 1, MAX_TOKENS_LIMIT):
            raise InvalidRequest(f"`{name}` must be an integer from 1 to {MAX_TOKENS_LIMIT}", param=name)
    choices = body.get("n")
    if choices is not None and not whole(choices, 1, MAX_CHOICES):
        raise InvalidRequest(f"`n` must be an integer from 1 to {MAX_CHOICES}", param="n")
    return body


def wants_usage(body: DialectObject) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
