"""OpenAI's Files API in both modes, through the official SDK: upload,
retrieve, list (paged), delete and download, byte for byte; files are
their account's alone; purposes, size limits and expiry as OpenAI has
them; and an upload or download of 50 MB never sits whole in memory."""

from __future__ import annotations

import hashlib
import os
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MODES, gateway_config
from tests.support.gateway import Gateway, gateway_in_mode

MB = 1024 * 1024


def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0)


def upload(gateway: Gateway, key: str, data: bytes, *, purpose: str = "user_data", name: str = "input.jsonl",
           **fields: Any) -> httpx.Response:
    """An upload as any HTTP client sends it, for what the SDK would refuse to send."""
    return httpx.post(f"{gateway.base_url}/files", headers={"authorization": f"Bearer {key}"},
                      data={"purpose": purpose, **fields}, files={"file": (name, data)})


def error_of(response: httpx.Response) -> tuple[int, str | None, str | None]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["param"]


def test_a_file_goes_up_and_comes_back_byte_for_byte(gateway: Gateway) -> None:
    openai_client = client(gateway, gateway.create_key("1"))
    # Past two chunks of the store, with every byte value and no line structure.
    data = bytes(range(256)) * 4 + os.urandom(2 * MB + 12_345)
    before = int(time.time())
    created = openai_client.files.create(file=("data.bin", data), purpose="user_data")
    assert created.id.startswith("file-")
    assert (created.object, created.bytes, created.filename, created.purpose, created.status) == (
        "file", len(data), "data.bin", "user_data", "processed")
    assert before <= created.created_at <= time.time()
    assert created.expires_at is None, "only batch files expire by default"
    assert openai_client.files.retrieve(created.id) == created
    assert openai_client.files.content(created.id).content == data

    empty = openai_client.files.create(file=("empty.jsonl", b""), purpose="batch")
    assert empty.bytes == 0
    assert openai_client.files.content(empty.id).content == b""

    deleted = openai_client.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(openai.NotFoundError):
        openai_client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.files.delete(created.id)
    assert [listed.id for listed in openai_client.files.list()] == [empty.id]


def test_files_are_listed_in_pages_by_purpose_and_order(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    openai_client = client(gateway, key)
    made = [openai_client.files.create(file=(f"{n}.jsonl", b"%d" % n), purpose="user_data").id for n in range(5)]
    batch = openai_client.files.create(file=("b.jsonl", b"{}"), purpose="batch").id

    assert [f.id for f in openai_client.files.list()] == [batch, *reversed(made)], "newest first by default"
    assert [f.id for f in openai_client.files.list(order="asc", limit=2)] == [*made, batch], "every page, in order"
    assert [f.id for f in openai_client.files.list(purpose="batch")] == [batch]
    assert [f.id for f in openai_client.files.list(purpose="user_data", order="asc")] == made

    def page(**query: Any) -> dict[str, Any]:
        response = httpx.get(f"{gateway.base_url}/files", params=query, headers={"authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text
        return response.json()

    first = page(limit=2, order="asc")
    assert (first["object"], [f["id"] for f in first["data"]]) == ("list", made[:2])
    assert (first["first_id"], first["last_id"], first["has_more"]) == (made[0], made[1], True)
    openai_client.files.delete(made[1])
    second = page(limit=2, order="asc", after=made[1])  # after a file that is gone
    assert ([f["id"] for f in second["data"]], second["has_more"]) == (made[2:4], True)
    last = page(limit=2, order="desc", after=made[2])
    assert ([f["id"] for f in last["data"]], last["has_more"]) == ([made[0]], False)
    assert page(after=made[0], order="asc", purpose="batch")["data"][0]["id"] == batch
    empty = page(after=batch, order="asc")
    assert (empty["data"], empty["first_id"], empty["last_id"], empty["has_more"]) == ([], None, None, False)

    for query, param in (({"limit": 0}, "limit"), ({"limit": 10_001}, "limit"), ({"order": "up"}, "order"),
                         ({"purpose": "nonsense"}, "purpose"), ({"after": "file-\x00"}, "after")):
        response = httpx.get(f"{gateway.base_url}/files", params=query, headers={"authorization": f"Bearer {key}"})
        assert (response.status_code, response.json()["error"]["param"]) == (400, param), query


def test_another_account_cannot_see_read_or_delete_a_file(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    owner = client(gateway, key)
    other = client(gateway, gateway.create_key("1"))
    created = owner.files.create(file=("mine.jsonl", b"secret"), purpose="batch")
    for call in (other.files.retrieve, other.files.content, other.files.delete):
        with pytest.raises(openai.NotFoundError) as refused:
            call(created.id)
        assert refused.value.status_code == 404
        assert refused.value.body["code"] == "file_not_found"  # type: ignore[index]
    assert list(other.files.list()) == []
    assert owner.files.content(created.id).content == b"secret", "untouched by the other account's delete"
    unauthenticated = httpx.get(f"{gateway.base_url}/files/{created.id}")
    assert unauthenticated.status_code == 401
    for malformed in ("file-%00", "x" * 500, created.id.upper()):  # never looked up: no database error either
        answer = httpx.get(f"{gateway.base_url}/files/{malformed}", headers={"authorization": f"Bearer {key}"})
        assert error_of(answer) == (404, "file_not_found", "id"), malformed


def test_an_upload_needs_a_known_purpose_and_a_file(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway, key).files.create(file=("a.jsonl", b"{}"), purpose="nonsense")  # type: ignore[arg-type]
    assert refused.value.body["param"] == "purpose"  # type: ignore[index]
    assert error_of(upload(gateway, key, b"{}", purpose="batch_output")) == (400, None, "purpose")
    assert "the gateway makes" in upload(gateway, key, b"{}", purpose="batch_output").json()["error"]["message"]
    assert error_of(upload(gateway, key, b"{}", purpose="")) == (400, None, "purpose")
    assert error_of(upload(gateway, key, b"{}", name="n" * 513)) == (400, None, "file")
    no_file = httpx.post(f"{gateway.base_url}/files", headers={"authorization": f"Bearer {key}"},
                         files={"purpose": (None, "batch"), "file": (None, "a field, not a file part")})
    assert error_of(no_file) == (400, None, "file")
    assert upload(gateway, key, b"{}", purpose="batch", model="gpt-4o").status_code == 200, "other fields ignored"
    as_json = httpx.post(f"{gateway.base_url}/files", headers={"authorization": f"Bearer {key}"},
                         json={"purpose": "batch"})
    assert error_of(as_json)[:2] == (415, "unsupported_media_type")
    assert [f.purpose for f in client(gateway, key).files.list()] == ["batch"], "nothing refused was kept"


def test_a_file_expires_when_asked_and_the_sweep_removes_it(gateway: Gateway) -> None:
    key = gateway.create_key("1")
    openai_client = client(gateway, key)
    created = openai_client.files.create(file=("a.jsonl", b"{}"), purpose="user_data",
                                         expires_after={"anchor": "created_at", "seconds": 3600})
    assert created.expires_at == created.created_at + 3600
    batch = openai_client.files.create(file=("b.jsonl", b"{}"), purpose="batch")
    assert batch.expires_at == batch.created_at + 30 * 86_400, "OpenAI's default for batch files"
    too_short = upload(gateway, key, b"{}", **{"expires_after[anchor]": "created_at",
                                               "expires_after[seconds]": "60"})
    assert error_of(too_short) == (400, None, "expires_after.seconds")
    wrong_anchor = upload(gateway, key, b"{}", **{"expires_after[anchor]": "last_active_at",
                                                  "expires_after[seconds]": "3600"})
    assert error_of(wrong_anchor) == (400, None, "expires_after.anchor")

    store = gateway.server.app.state.runtime.files
    store.clock = lambda: created.expires_at  # the moment it expires
    try:
        with pytest.raises(openai.NotFoundError):
            openai_client.files.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            openai_client.files.content(created.id)
        assert [f.id for f in openai_client.files.list()] == [batch.id]
    finally:
        store.clock = time.time
    assert openai_client.files.retrieve(created.id).id == created.id, "not yet removed: expiry is not a clock's whim"
    assert gateway.server.call(store.remove_expired(now=created.expires_at)) >= 1
    with pytest.raises(openai.NotFoundError):
        openai_client.files.retrieve(created.id)
    assert openai_client.files.content(batch.id).content == b"{}", "the sweep keeps what has not expired"


@pytest.fixture(scope="module", params=MODES)
def small_limits(request: pytest.FixtureRequest, upstream: Any, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[Gateway]:
    config = gateway_config(upstream.url)
    with gateway_in_mode(request.param, config, tmp_path_factory.mktemp(f"files-{request.param}"),
                         max_batch_file_bytes=1000, max_file_bytes=5000) as gateway:
        yield gateway


def test_a_file_over_its_purposes_limit_gets_413(small_limits: Gateway) -> None:
    gateway = small_limits
    key = gateway.create_key("1")
    openai_client = client(gateway, key)
    with pytest.raises(openai.APIStatusError) as refused:
        openai_client.files.create(file=("big.jsonl", b"x" * 1001), purpose="batch")
    assert refused.value.status_code == 413
    assert refused.value.body["code"] == "file_too_large"  # type: ignore[index]
    assert openai_client.files.create(file=("ok.jsonl", b"x" * 1000), purpose="batch").bytes == 1000
    assert openai_client.files.create(file=("ok.bin", b"x" * 5000), purpose="user_data").bytes == 5000
    assert error_of(upload(gateway, key, b"x" * 5001))[:2] == (413, "file_too_large")
    # A body past the upload limit is refused before it is read.
    assert error_of(upload(gateway, key, b"x" * (70 * 1024)))[:2] == (413, "request_too_large")
    assert sorted(f.bytes for f in openai_client.files.list()) == [1000, 5000], "nothing refused was kept"


def test_a_chunked_upload_is_counted_as_it_arrives(small_limits: Gateway) -> None:
    gateway = small_limits
    key = gateway.create_key("1")

    def chunked(size: int) -> httpx.Response:
        boundary = "gatewayzboundary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nuser_data\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()

        def body() -> Iterator[bytes]:  # no length known: sent chunked
            yield head
            for start in range(0, size, 1024):
                yield b"y" * min(1024, size - start)
            yield f"\r\n--{boundary}--\r\n".encode()

        return httpx.post(f"{gateway.base_url}/files", content=body(), headers={
            "authorization": f"Bearer {key}", "content-type": f"multipart/form-data; boundary={boundary}"})

    accepted = chunked(4000)
    assert accepted.status_code == 200, accepted.text
    assert client(gateway, key).files.content(accepted.json()["id"]).content == b"y" * 4000
    assert error_of(chunked(200 * 1024))[:2] == (413, "request_too_large")
    assert [f.bytes for f in client(gateway, key).files.list()] == [4000]


def test_50_mb_go_up_and_down_without_being_held_in_memory(gateway: Gateway, tmp_path: Path) -> None:
    """The gateway runs in this process: every allocation of the upload's
    and download's path, the client's included, is traced."""
    size = 50 * MB
    path = tmp_path / "big.jsonl"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for n in range(size // MB):
            piece = (b"%07d" % n) * (MB // 7) + b"\n" * (MB % 7)
            digest.update(piece)
            out.write(piece)
    openai_client = client(gateway, gateway.create_key("1"))

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        with path.open("rb") as file:
            created = openai_client.files.create(file=file, purpose="batch")
        upload_peak = tracemalloc.get_traced_memory()[1] - baseline

        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        downloaded = hashlib.sha256()
        received = 0
        with openai_client.files.with_streaming_response.content(created.id) as response:
            for piece in response.iter_bytes():
                downloaded.update(piece)
                received += len(piece)
        download_peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()

    assert created.bytes == size
    assert (received, downloaded.hexdigest()) == (size, digest.hexdigest())
    assert upload_peak < 12 * MB, f"the upload held {upload_peak / MB:.1f} MB at once"
    assert download_peak < 12 * MB, f"the download held {download_peak / MB:.1f} MB at once"
