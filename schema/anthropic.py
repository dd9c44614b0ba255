"""Anthropic Messages requests: the checks the gateway itself needs.

Like OpenAI requests, the body is otherwise passed on untouched to an
Anthropic provider; translation to another dialect refuses what it cannot
express (``schema.translate``).
"""

from __future__ import annotations

from schema.errors import InvalidRequest
from schema.jobs import DialectObject
from schema.openai import MAX_TOKENS_LIMIT, whole

ROLES = frozenset({"user", "assistant"})


def check_messages_request(body: object) -> DialectObject:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: Field required", param="model")
    max_tokens = body.get("max_tokens")
    if not whole(max_tokens, 1, MAX_TOKENS_LIMIT):
        raise InvalidRequest(f"max_tokens: an integer from 1 to {MAX_TOKENS_LIMIT} is required", param="max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: at least one message is required", param="messages")
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if not isinstance(role, str) or role not in ROLES:  # an object or array role is unhashable
            raise InvalidRequest(f"messages.{index}.role: must be one of {sorted(ROLES)}",
                                 param=f"messages.{index}.role")
        content = message.get("content")
        if not isinstance(content, (str, list)):
            raise InvalidRequest(f"messages.{index}.content: must be a string or a list of content blocks",
                                 param=f"messages.{index}.content")
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise InvalidRequest("system: must be a string or a list of text blocks", param="system")
    if not isinstance(body.get("stream", False), bool):
        raise InvalidRequest("stream: must be a boolean", param="stream")
    return body
