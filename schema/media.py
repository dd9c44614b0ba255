"""OpenAI's embeddings and image-generation wire shapes: the request checks
the gateway itself needs, and the usage each answer is billed by.

Like chat requests, the body is otherwise passed through untouched (``user``,
``quality``, ``style``, ``output_format`` …): the upstream is the authority on
what it accepts. Neither endpoint streams through the gateway.

Embeddings are billed by input tokens; image generation per image, plus the
tokens a GPT Image model reports. Both the worker (which settles) and the
ingress (which shows ``usage.cost``) read an answer's usage here, from the
same payload and answer, so what the client is shown is what it is charged.
"""

from __future__ import annotations

import re
from typing import TypeGuard

from schema.errors import InvalidRequest
from schema.jobs import DialectObject, JobKind, Usage

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit on the inputs of one request
ENCODING_FORMATS = ("float", "base64")
MAX_IMAGES = 10
RESPONSE_FORMATS = ("url", "b64_json")
SIZE = re.compile(r"^(auto|[1-9][0-9]{0,4}x[1-9][0-9]{0,4})$")
# About four characters a token, as for chat: only when the upstream reported nothing.
CHARS_PER_TOKEN = 4


def _check_common(body: object, endpoint: str) -> DialectObject:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("`model` is required and must be a non-empty string", param="model")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("`stream` must be a boolean", param="stream")
    if stream:
        raise InvalidRequest(f"{endpoint} cannot be streamed: leave `stream` unset or false", param="stream")
    return body


def _whole(value: object, low: int, high: int | None = None) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)


def check_embeddings_request(body: object) -> DialectObject:
    """``input`` is a non-empty string, or a non-empty list (at most 2048) of
    non-empty strings, of token ids, or of non-empty token id lists."""
    checked = _check_common(body, "Embeddings")
    text = checked.get("input")
    shape = "`input` must be a non-empty string, or a non-empty array of strings, of token ids or of token id arrays"
    if isinstance(text, str):
        if not text:
            raise InvalidRequest("`input` cannot be an empty string", param="input")
    elif isinstance(text, list) and text:
        if len(text) > MAX_EMBEDDING_INPUTS:
            raise InvalidRequest(f"`input` has {len(text)} items; at most {MAX_EMBEDDING_INPUTS} are allowed",
                                 param="input")
        if all(isinstance(item, str) for item in text):
            empty = next((index for index, item in enumerate(text) if not item), None)
            if empty is not None:
                raise InvalidRequest(f"input[{empty}] cannot be an empty string", param=f"input.{empty}")
        elif not all(_whole(item, 0) for item in text):
            for index, item in enumerate(text):
                if not (isinstance(item, list) and item and all(_whole(token, 0) for token in item)):
                    raise InvalidRequest(f"{shape} (input[{index}] is not)", param=f"input.{index}")
    else:
        raise InvalidRequest(shape, param="input")
    dimensions = checked.get("dimensions")
    if dimensions is not None and not _whole(dimensions, 1):
        raise InvalidRequest("`dimensions` must be a positive integer", param="dimensions")
    encoding = checked.get("encoding_format")
    if encoding is not None and encoding not in ENCODING_FORMATS:
        raise InvalidRequest(f"`encoding_format` must be one of {list(ENCODING_FORMATS)}", param="encoding_format")
    return checked


def check_images_request(body: object) -> DialectObject:
    checked = _check_common(body, "Image generation")
    prompt = checked.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("`prompt` is required and must be a non-empty string", param="prompt")
    count = checked.get("n")
    if count is not None and not _whole(count, 1, MAX_IMAGES):
        raise InvalidRequest(f"`n` must be an integer from 1 to {MAX_IMAGES}", param="n")
    size = checked.get("size")
    if size is not None and not (isinstance(size, str) and SIZE.match(size)):
        raise InvalidRequest("`size` must be `auto` or WIDTHxHEIGHT in pixels, such as 1024x1024", param="size")
    response_format = checked.get("response_format")
    if response_format is not None and response_format not in RESPONSE_FORMATS:
        raise InvalidRequest(f"`response_format` must be one of {list(RESPONSE_FORMATS)}", param="response_format")
    return checked


def images_requested(payload: DialectObject) -> int:
    count = payload.get("n")
    return count if _whole(count, 1) else 1


# Usage


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _estimated_tokens(text: object) -> int:
    """Token ids count one each; text about four characters a token."""
    if isinstance(text, str):
        return -(-len(text) // CHARS_PER_TOKEN)
    if isinstance(text, list):
        return sum(1 if isinstance(item, int) else _estimated_tokens(item) for item in text)
    return 0


def embeddings_usage(payload: DialectObject, answer: DialectObject) -> Usage:
    """The upstream's ``usage.prompt_tokens``, else an estimate from ``input``."""
    usage = answer.get("usage")
    prompt = _count(usage.get("prompt_tokens")) if isinstance(usage, dict) else None
    if prompt is not None:
        return Usage(input_tokens=prompt)
    return Usage(input_tokens=_estimated_tokens(payload.get("input")), reported=False)


def images_usage(payload: DialectObject, answer: DialectObject) -> Usage:
    """The images in ``data``, plus the tokens a GPT Image model reports in
    ``usage``; without them, the prompt's tokens are estimated (output tokens
    cannot be, and count 0)."""
    data = answer.get("data")
    images = len(data) if isinstance(data, list) else 0
    usage = answer.get("usage")
    if isinstance(usage, dict):
        input_tokens, output_tokens = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
        if input_tokens is not None and output_tokens is not None:
            return Usage(input_tokens=input_tokens, output_tokens=output_tokens, images=images)
    return Usage(input_tokens=_estimated_tokens(payload.get("prompt")), images=images, reported=False)


def media_usage(kind: JobKind, payload: DialectObject, answer: DialectObject) -> Usage:
    if kind == "embeddings":
        return embeddings_usage(payload, answer)
    if kind == "images":
        return images_usage(payload, answer)
    raise ValueError(f"{kind} answers are not media answers")
