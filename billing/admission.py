"""The worst case a request can cost, reserved before it is enqueued.

Prompt tokens are over-estimated from the request's bytes (about three bytes
a token, which no common tokenizer beats on average), and output tokens are
the request's ``max_tokens``/``max_completion_tokens`` times ``n``, or the
model's output limit, or a default.

Embeddings produce no output tokens: only their input is bounded (a token id
is one token however few digits it has). Image generation costs ``n``
images, plus, for a model with token prices (GPT Image), the prompt's bound
and each image's output tokens: the model's output limit, or a default large
enough for the biggest, highest-quality images.
"""

from __future__ import annotations

from typing import Any

import orjson

from billing.pricing import cost_of
from schema.jobs import JobKind, Price, Usage
from schema.media import images_requested
from schema.money import MicroCredits

BYTES_PER_TOKEN = 3
DEFAULT_MAX_OUTPUT_TOKENS = 4096
# A high-quality 1536x1024 image is 6,240 output tokens on gpt-image-1;
# larger sizes and newer models go further. Set max_output_tokens to tighten.
DEFAULT_MAX_IMAGE_OUTPUT_TOKENS = 16_384


def prompt_token_bound(payload: dict[str, Any]) -> int:
    """Every byte of the request may be prompt: messages, a system prompt,
    tools, an embedding's input, whatever the dialect calls them."""
    return -(-len(orjson.dumps(payload)) // BYTES_PER_TOKEN)


def output_token_bound(payload: dict[str, Any], model_limit: int | None) -> int:
    requested = payload.get("max_completion_tokens") or payload.get("max_tokens")
    limit = requested if isinstance(requested, int) and requested > 0 else model_limit or DEFAULT_MAX_OUTPUT_TOKENS
    choices = payload.get("n")
    return limit * (choices if isinstance(choices, int) and choices > 1 else 1)


def embedding_token_bound(text: object) -> int:
    """Text at three bytes a token (each input is tokenized alone, so each
    rounds up), token ids one each."""
    if isinstance(text, str):
        return -(-len(text.encode()) // BYTES_PER_TOKEN)
    if isinstance(text, list):
        return sum(1 if isinstance(item, int) else embedding_token_bound(item) for item in text)
    return 0


def worst_case_usage(payload: dict[str, Any], model_limit: int | None, kind: JobKind = "chat") -> Usage:
    if kind == "embeddings":
        return Usage(input_tokens=embedding_token_bound(payload.get("input")))
    if kind == "images":
        images = images_requested(payload)
        per_image = model_limit or DEFAULT_MAX_IMAGE_OUTPUT_TOKENS
        return Usage(input_tokens=prompt_token_bound(payload), output_tokens=images * per_image, images=images)
    return Usage(input_tokens=prompt_token_bound(payload), output_tokens=output_token_bound(payload, model_limit))


def worst_case_cost(payload: dict[str, Any], price: Price, model_limit: int | None, kind: JobKind = "chat") -> MicroCredits:
    return cost_of(worst_case_usage(payload, model_limit, kind), price)
