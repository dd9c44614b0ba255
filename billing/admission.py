"""The worst case a request can cost, reserved before it is enqueued.

Prompt tokens are over-estimated from the request's bytes (about three bytes
a token, which no common tokenizer beats on average), and output tokens are
the request's ``max_tokens``/``max_completion_tokens`` times ``n``, or the
model's output limit, or a default.
"""

from __future__ import annotations

from typing import Any

import orjson

from billing.pricing import cost_of
from schema.jobs import Price, Usage
from schema.money import MicroCredits

BYTES_PER_TOKEN = 3
DEFAULT_MAX_OUTPUT_TOKENS = 4096


def prompt_token_bound(payload: dict[str, Any]) -> int:
    """Every byte of the request may be prompt: messages, a system prompt,
    tools, an embedding's input, whatever the dialect calls them."""
    return -(-len(orjson.dumps(payload)) // BYTES_PER_TOKEN)


def output_token_bound(payload: dict[str, Any], model_limit: int | None) -> int:
    requested = payload.get("max_completion_tokens") or payload.get("max_tokens")
    limit = requested if isinstance(requested, int) and requested > 0 else model_limit or DEFAULT_MAX_OUTPUT_TOKENS
    choices = payload.get("n")
    return limit * (choices if isinstance(choices, int) and choices > 1 else 1)


def worst_case_cost(payload: dict[str, Any], price: Price, model_limit: int | None) -> MicroCredits:
    bound = Usage(input_tokens=prompt_token_bound(payload), output_tokens=output_token_bound(payload, model_limit))
    return cost_of(bound, price)
