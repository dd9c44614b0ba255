"""The worst case a request can cost, reserved before it is enqueued.

Prompt tokens are over-estimated from the request's bytes (about three bytes
a token, which no common tokenizer beats on average), and output tokens are
the request's ``max_tokens``/``max_completion_tokens`` (the larger, if it sets
both: an upstream may read either) times ``n``, or the model's output limit,
or a default. A chat request that sets no limit is sent upstream with the one
the hold assumed (``bound_output``), so the provider stops where the hold
does. Whatever an upstream still reports beyond the hold is not charged
(``billing.pricing.charge``).

Embeddings produce no output tokens: only their input is bounded (a token id
is one token however few digits it has). Image generation costs ``n``
images, plus, for a model with token prices (GPT Image), the prompt's bound
and each image's output tokens: the model's output limit, or a default large
enough for the biggest, highest-quality images.
"""

from __future__ import annotations

import orjson

from billing.pricing import cost_of
from schema.errors import InsufficientCredits
from schema.jobs import DialectObject, JobKind, Price, Usage
from schema.media import images_requested
from schema.money import MicroCredits, micros_to_credits

BYTES_PER_TOKEN = 3
DEFAULT_MAX_OUTPUT_TOKENS = 4096
# A high-quality 1536x1024 image is 6,240 output tokens on gpt-image-1;
# larger sizes and newer models go further. Set max_output_tokens to tighten.
DEFAULT_MAX_IMAGE_OUTPUT_TOKENS = 16_384
MAX_HOLD = MicroCredits(2**53)  # far above any balance; exact in Redis scripts (doubles) and 64-bit columns


def prompt_token_bound(payload: DialectObject) -> int:
    """Every byte of the request may be prompt: messages, a system prompt,
    tools, an embedding's input, whatever the dialect calls them."""
    return -(-len(orjson.dumps(payload)) // BYTES_PER_TOKEN)


def output_limit(payload: DialectObject, model_limit: int | None) -> int:
    """The tokens one choice may produce: the request's own limit, else the model's, else the default."""
    requested = [value for value in (payload.get("max_completion_tokens"), payload.get("max_tokens"))
                 if type(value) is int and value > 0]
    return max(requested) if requested else model_limit or DEFAULT_MAX_OUTPUT_TOKENS


def output_token_bound(payload: DialectObject, model_limit: int | None) -> int:
    choices = payload.get("n")
    return output_limit(payload, model_limit) * (choices if type(choices) is int and choices > 1 else 1)


def bound_output(payload: DialectObject, model_limit: int | None) -> None:
    """Give an OpenAI-dialect chat request that sets no output limit the one
    its hold assumes, as ``max_tokens`` (the field every OpenAI-compatible
    server reads; translation carries it to the other dialects, and a provider
    that wants ``max_completion_tokens`` gets it renamed by its adapter)."""
    if payload.get("max_tokens") is None and payload.get("max_completion_tokens") is None:
        payload["max_tokens"] = model_limit or DEFAULT_MAX_OUTPUT_TOKENS


def embedding_token_bound(text: object) -> int:
    """Text at three bytes a token (each input is tokenized alone, so each
    rounds up), token ids one each."""
    if isinstance(text, str):
        return -(-len(text.encode()) // BYTES_PER_TOKEN)
    if isinstance(text, list):
        return sum(1 if isinstance(item, int) else embedding_token_bound(item) for item in text)
    return 0


def worst_case_usage(payload: DialectObject, model_limit: int | None, kind: JobKind = "chat") -> Usage:
    if kind == "embeddings":
        return Usage(input_tokens=embedding_token_bound(payload.get("input")))
    if kind == "images":
        images = images_requested(payload)
        per_image = model_limit or DEFAULT_MAX_IMAGE_OUTPUT_TOKENS
        return Usage(input_tokens=prompt_token_bound(payload), output_tokens=images * per_image, images=images)
    return Usage(input_tokens=prompt_token_bound(payload), output_tokens=output_token_bound(payload, model_limit))


def worst_case_cost(payload: DialectObject, price: Price, model_limit: int | None,
                    kind: JobKind = "chat") -> MicroCredits:
    return cost_of(worst_case_usage(payload, model_limit, kind), price)


def check_holdable(amount: MicroCredits) -> None:
    """A worst case no account could ever hold is refused before it reaches
    the ledger (whose amounts are 64-bit)."""
    if amount > MAX_HOLD:
        raise InsufficientCredits(f"This request can cost up to {micros_to_credits(amount)} credits, more than any "
                                  f"account can hold: lower max_tokens")
