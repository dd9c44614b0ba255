"""The built-in ``mock`` provider: deterministic, offline, streamed echo,
embeddings and images.

It answers ``You said: <last user message>`` word by word, and counts one
token per whitespace-separated word, so a newcomer's first request works with
no provider configured and tests can predict every byte. Embeddings are unit
vectors drawn from a hash of each input (``dimensions`` and
``encoding_format`` honoured as OpenAI does); images are tiny solid-colour
PNGs whose colour comes from a hash of the prompt, made in code, never
downloaded.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from schema.errors import UpstreamError
from schema.jobs import DialectObject
from schema.translate import Dialect

GREETING = "Hello from the GatewayZ mock provider."
EMBEDDING_DIMENSIONS = 256  # when the request sets no ``dimensions``
MAX_EMBEDDING_DIMENSIONS = 3072  # OpenAI's largest embedding model's
IMAGE_SIDE = 16  # pixels: the mock's images are tiny whatever ``size`` asks


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _reply(payload: DialectObject) -> tuple[str, int]:
    messages = payload.get("messages") or []
    prompt_tokens = sum(len(_text_of(m.get("content")).split()) for m in messages if isinstance(m, dict))
    last_user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    said = _text_of(last_user.get("content")).strip() if last_user else ""
    text = f"You said: {said}" if said else GREETING
    max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens > 0:
        text = " ".join(text.split()[:max_tokens])
    return text, prompt_tokens


class MockAdapter:
    dialect: Dialect = "openai"

    async def complete(self, model: str, payload: DialectObject) -> DialectObject:
        text, prompt_tokens = _reply(payload)
        completion_tokens = len(text.split())
        return {
            "id": f"chatcmpl-mock{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                 "logprobs": None}
            ],
            "usage": _usage(prompt_tokens, completion_tokens),
        }

    async def stream(self, model: str, payload: DialectObject) -> AsyncIterator[DialectObject]:
        text, prompt_tokens = _reply(payload)
        words = text.split()
        base = {"id": f"chatcmpl-mock{uuid.uuid4().hex[:24]}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model}

        def chunk(delta: DialectObject, finish: str | None = None) -> DialectObject:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

        yield chunk({"role": "assistant", "content": ""})
        for position, word in enumerate(words):
            yield chunk({"content": word if position == 0 else f" {word}"})
        yield chunk({}, "stop")
        yield {**base, "choices": [], "usage": _usage(prompt_tokens, len(words))}

    async def embed(self, model: str, payload: DialectObject) -> DialectObject:
        dimensions = payload.get("dimensions") or EMBEDDING_DIMENSIONS
        if dimensions > MAX_EMBEDDING_DIMENSIONS:
            raise UpstreamError(f"the mock embeds in at most {MAX_EMBEDDING_DIMENSIONS} dimensions", status=400)
        inputs = _inputs(payload["input"])
        as_base64 = payload.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(inputs):
            vector = _unit_vector(text, dimensions)
            encoded: list[float] | str = (base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
                                          if as_base64 else vector)
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(text) if isinstance(text, list) else len(text.split()) for text in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return {"object": "list", "data": data, "model": model, "usage": usage}

    async def generate_images(self, model: str, payload: DialectObject) -> DialectObject:
        prompt: str = payload["prompt"]
        images = []
        for index in range(payload.get("n") or 1):
            encoded = base64.b64encode(_png(hashlib.sha256(f"{index}:{prompt}".encode()).digest()[:3])).decode()
            if payload.get("response_format") == "url":
                images.append({"url": f"data:image/png;base64,{encoded}", "revised_prompt": prompt})
            else:
                images.append({"b64_json": encoded, "revised_prompt": prompt})
        words = len(prompt.split())
        usage = {"input_tokens": words, "output_tokens": 0, "total_tokens": words,
                 "input_tokens_details": {"text_tokens": words, "image_tokens": 0}}
        return {"created": int(time.time()), "data": images, "usage": usage}

    async def aclose(self) -> None:
        return None


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _inputs(given: str | list[Any]) -> list[str | list[int]]:
    """One string, token ids, or a list of either, as a list of inputs."""
    if isinstance(given, str):
        return [given]
    if given and all(isinstance(item, int) for item in given):
        return [given]
    return given


def _unit_vector(text: str | list[int], dimensions: int) -> list[float]:
    """Deterministic in the input; float32 values, so that the float and
    base64 encodings of one vector carry the same numbers."""
    seed = text.encode() if isinstance(text, str) else orjson.dumps(text)
    raw = hashlib.shake_256(seed).digest(4 * dimensions)
    values = [int.from_bytes(raw[i:i + 4], "little") / 2**31 - 1.0 for i in range(0, len(raw), 4)]
    norm = math.sqrt(sum(value * value for value in values)) or 1.0
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(value / norm for value in values))))


def _png(rgb: bytes) -> bytes:
    """A solid-colour ``IMAGE_SIDE``-pixel square PNG (8-bit RGB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", IMAGE_SIDE, IMAGE_SIDE, 8, 2, 0, 0, 0)
    rows = (b"\x00" + rgb * IMAGE_SIDE) * IMAGE_SIDE  # filter type 0 before each row
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
