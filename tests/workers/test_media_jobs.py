"""Embeddings and image jobs in the pool, on in-process transports: the mock
provider's offline answers, their usage events, and a provider whose adapter
has no such endpoint."""

from __future__ import annotations

import base64
import math
import struct
import time
import zlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from schema.catalog import ProviderSpec
from schema.jobs import Job, JobKind, Price, Route, StreamEvent, UsageEvent
from tests.support.pools import memory_pool, run_job
from workers.adapters.base import EmbeddingsAdapter, ImagesAdapter
from workers.adapters.mock import EMBEDDING_DIMENSIONS, IMAGE_SIDE, MockAdapter


class ChatOnly:
    """An adapter whose provider has neither endpoint (as Anthropic's has not)."""

    dialect = "openai"

    async def complete(self, model: str, payload: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("not a chat job")

    async def stream(self, model: str, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        raise AssertionError("not a chat job")
        yield {}

    async def aclose(self) -> None:
        return None


def media_job(kind: JobKind, payload: dict[str, Any]) -> Job:
    return Job(kind=kind, account_id=1, key_id=1, model=f"mock/{kind}",
               routes=[Route(provider="mock", upstream_model=kind)],
               payload=payload, deadline=time.time() + 60,
               price=Price(input_per_mtok=Decimal(1), per_image=Decimal("0.01")))


async def run(adapter: object, item: Job) -> tuple[list[StreamEvent], list[UsageEvent]]:
    return await run_job(memory_pool(ProviderSpec(name="mock", adapter="mock"), adapter), item)  # type: ignore[arg-type]


def png_pixels(png: bytes) -> tuple[int, int, bytes]:
    """Width, height and raw scanlines of a PNG, its chunk checksums verified."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    while position < len(png):
        (length,) = struct.unpack(">I", png[position:position + 4])
        kind, data = png[position + 4:position + 8], png[position + 8:position + 8 + length]
        (checksum,) = struct.unpack(">I", png[position + 8 + length:position + 12 + length])
        assert checksum == zlib.crc32(kind + data), kind
        chunks[kind] = data
        position += 12 + length
    assert b"IEND" in chunks
    width, height = struct.unpack(">II", chunks[b"IHDR"][:8])
    return width, height, zlib.decompress(chunks[b"IDAT"])


async def test_the_mock_embeds_each_input_in_a_unit_vector_drawn_from_its_text() -> None:
    events, usage = await run(MockAdapter(), media_job("embeddings", {"input": ["one two", "three", "one two"]}))
    assert [event["kind"] for event in events] == ["response"]
    answer = events[0]["data"]
    vectors = [item["embedding"] for item in answer["data"]]
    assert [item["index"] for item in answer["data"]] == [0, 1, 2]
    assert all(len(vector) == EMBEDDING_DIMENSIONS for vector in vectors)
    assert all(math.isclose(math.fsum(x * x for x in vector), 1, rel_tol=1e-5) for vector in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert answer["usage"] == {"prompt_tokens": 5, "total_tokens": 5}  # a token a word
    assert [(u.usage.input_tokens, u.usage.images, u.usage.reported) for u in usage] == [(5, 0, True)]


async def test_the_mock_honours_dimensions_and_base64() -> None:
    as_floats = (await MockAdapter().embed("embed", {"input": "hello", "dimensions": 5}))["data"][0]["embedding"]
    encoded = (await MockAdapter().embed("embed", {"input": "hello", "dimensions": 5, "encoding_format": "base64"}))
    packed = base64.b64decode(encoded["data"][0]["embedding"])
    assert len(as_floats) == 5 and list(struct.unpack("<5f", packed)) == as_floats  # little-endian float32, as OpenAI
    ids = await MockAdapter().embed("embed", {"input": [[1, 2, 3], [4]]})
    assert len(ids["data"]) == 2 and ids["usage"]["prompt_tokens"] == 4


async def test_the_mock_paints_tiny_pngs_by_prompt() -> None:
    events, usage = await run(MockAdapter(), media_job("images", {"prompt": "a red fox", "n": 2}))
    answer = events[0]["data"]
    images = [base64.b64decode(item["b64_json"]) for item in answer["data"]]
    sizes = [png_pixels(image)[:2] for image in images]
    assert sizes == [(IMAGE_SIDE, IMAGE_SIDE)] * 2
    raw, stride = png_pixels(images[0])[2], 1 + 3 * IMAGE_SIDE
    rows = [raw[start:start + stride] for start in range(0, len(raw), stride)]
    assert len(rows) == IMAGE_SIDE and all(row == b"\x00" + row[1:4] * IMAGE_SIDE for row in rows)  # one colour
    assert rows[0] != png_pixels(images[1])[2][:stride]  # each image its own colour
    again = await MockAdapter().generate_images("image", {"prompt": "a red fox", "n": 2})
    assert [item["b64_json"] for item in again["data"]] == [item["b64_json"] for item in answer["data"]]
    other = await MockAdapter().generate_images("image", {"prompt": "a blue fox"})
    assert other["data"][0]["b64_json"] != answer["data"][0]["b64_json"]
    assert [(u.usage.input_tokens, u.usage.output_tokens, u.usage.images) for u in usage] == [(3, 0, 2)]
    url = await MockAdapter().generate_images("image", {"prompt": "a red fox", "response_format": "url"})
    assert url["data"][0]["url"] == "data:image/png;base64," + answer["data"][0]["b64_json"]


async def test_the_mock_refuses_more_dimensions_than_any_model_has() -> None:
    events, usage = await run(MockAdapter(), media_job("embeddings", {"input": "x", "dimensions": 100_000}))
    assert [(e["kind"], e["data"]["status"]) for e in events] == [("error", 400)]
    assert [u.usage.input_tokens for u in usage] == [0]


@pytest.mark.parametrize(("kind", "payload"), [("embeddings", {"input": "hello"}), ("images", {"prompt": "a cat"})])
async def test_an_adapter_without_the_endpoint_fails_the_job_with_400_and_no_charge(kind: JobKind,
                                                                                   payload: dict[str, Any]) -> None:
    assert not isinstance(ChatOnly(), EmbeddingsAdapter) and not isinstance(ChatOnly(), ImagesAdapter)
    events, usage = await run(ChatOnly(), media_job(kind, payload))
    assert [e["kind"] for e in events] == ["error"]
    assert events[0]["data"]["status"] == 400 and f"cannot serve {kind} requests" in events[0]["data"]["message"]
    assert [(u.usage.input_tokens, u.usage.output_tokens, u.usage.images) for u in usage] == [(0, 0, 0)]
