"""Batches through the official SDKs, unchanged, in both run modes: OpenAI's
Batch API (a file of requests, its output and error files) and Anthropic's
Message Batches; every line answered once and charged once at the batch
discount; a bad file refused naming its lines; a cancelled batch; a batch
whose window ends; an account that runs out of credit mid-batch; and
batches kept to their account."""

from __future__ import annotations

import asyncio
import io
import math
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from sqlalchemy import update

from loadtests.fake_upstream import FakeUpstream
from schema.database import create_engine
from schema.tables import batches
from tests.conftest import MODES, gateway_config
from tests.contract.test_metrics import grown, scrape, value
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.gateway import Gateway, gateway_in_mode

POLL = 0.1
HELLO = [{"role": "user", "content": "hello"}]
WAIT = 30.0
# tests/conftest.py: fake-small costs 1 micro-credit an input token and 2 an
# output token; batch lines pay half (the default batch_discount_percent).
DISCOUNT = 0.5


def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=30)


def claude(gateway: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=gateway.url, max_retries=0, timeout=30)


def line(custom_id: str, text: str, model: str = "fake-small", **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 20, **body}}


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in lines)


def upload(sdk: openai.OpenAI, content: bytes) -> str:
    return sdk.files.create(file=("requests.jsonl", io.BytesIO(content)), purpose="batch").id


def wait_for(sdk: openai.OpenAI, batch_id: str, *statuses: str) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        batch = sdk.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.status}"
        time.sleep(POLL)


def file_lines(sdk: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [orjson.loads(raw) for raw in sdk.files.content(file_id).content.splitlines()]


def usage_rows(gateway: Gateway, key: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{gateway.url}/user/usage", headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


def test_an_openai_batch_answers_every_line_once_at_the_discount(gateway: Gateway, upstream: FakeUpstream) -> None:
    key = gateway.create_key("10")
    sdk = client(gateway, key)
    before = scrape(gateway)
    requests = [line("first", "hello batch"), line("second", "two words", model="fake/fake-large"),
                line("third", "a line for claude", model="claude-fake-small"), line("bad", "fail:400")]
    batch = sdk.batches.create(input_file_id=upload(sdk, jsonl(requests)), endpoint="/v1/chat/completions",
                               completion_window="24h", metadata={"run": "one"})
    assert batch.status == "validating" and batch.metadata == {"run": "one"}

    done = wait_for(sdk, batch.id, "completed", "failed")
    assert done.status == "completed", done.errors
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (4, 3, 1)
    assert done.completed_at is not None and done.in_progress_at is not None

    output = {item["custom_id"]: item for item in file_lines(sdk, done.output_file_id)}
    assert set(output) == {"first", "second", "third"}
    assert output["first"]["response"]["status_code"] == 200
    assert output["first"]["response"]["body"]["choices"][0]["message"]["content"] == "Echo: hello batch"
    assert output["third"]["response"]["body"]["object"] == "chat.completion"  # translated from Anthropic
    [error] = file_lines(sdk, done.error_file_id)
    assert error["custom_id"] == "bad" and error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["message"]

    rows = [row for row in usage_rows(gateway, key)]
    assert len(rows) == 4 and {row["batch_id"] for row in rows} == {batch.id}
    charged = 0
    for row in rows:
        assert row["cost_micros"] == math.ceil(DISCOUNT * (row["input_tokens"] + 2 * row["output_tokens"]))
        charged += row["cost_micros"]
    assert gateway.wait_for_balance(key, 10_000_000 - charged) == 10_000_000 - charged
    assert gateway.held(key) == 0
    assert gateway.reconcile(key) == []

    after = scrape(gateway)  # the batches' own counters, read at scrape time
    assert grown(before, after, "gatewayz_batch_lines_total", outcome="succeeded") >= 3
    assert grown(before, after, "gatewayz_batch_lines_total", outcome="errored") >= 1
    assert value(after, "gatewayz_batches", status="completed") >= 1


def test_a_bad_file_fails_the_batch_naming_each_bad_line(gateway: Gateway) -> None:
    key = gateway.create_key("10")
    sdk = client(gateway, key)
    content = b"\n".join([
        orjson.dumps(line("one", "fine")),
        b"{not json",
        orjson.dumps(line("one", "a second one")),
        orjson.dumps({**line("four", "x"), "url": "/v1/embeddings"}),
        orjson.dumps(line("five", "x", stream=True)),
    ]) + b"\n"
    batch = sdk.batches.create(input_file_id=upload(sdk, content), endpoint="/v1/chat/completions",
                               completion_window="24h")
    failed = wait_for(sdk, batch.id, "failed", "in_progress", "completed")
    assert failed.status == "failed"
    assert failed.errors is not None and failed.errors.data is not None
    assert [(item.line, item.param) for item in failed.errors.data] == [
        (2, None), (3, "custom_id"), (4, "url"), (5, "body.stream")]
    assert failed.output_file_id is None and failed.request_counts.total == 0


def test_a_batch_is_refused_for_a_missing_file_or_a_wrong_endpoint(gateway: Gateway) -> None:
    key = gateway.create_key("10")
    sdk = client(gateway, key)
    with pytest.raises(openai.NotFoundError):
        sdk.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    file_id = upload(sdk, jsonl([line("a", "x")]))
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.batches.create(input_file_id=file_id, endpoint="/v1/completions",  # type: ignore[arg-type]
                           completion_window="24h")
    assert refused.value.body["param"] == "endpoint"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        sdk.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                           completion_window="1h")  # type: ignore[arg-type]


def test_an_account_that_runs_out_of_credit_gets_insufficient_credits_on_the_rest(gateway: Gateway) -> None:
    # Each line's worst case: its prompt bound plus 100_000 output tokens at
    # 1 micro-credit each (discounted): 0.12 credits holds one line, not two.
    key = gateway.create_key("0.12")
    sdk = client(gateway, key)
    requests = [line(f"n{index}", "hi", max_tokens=100_000) for index in range(3)]
    batch = sdk.batches.create(input_file_id=upload(sdk, jsonl(requests)), endpoint="/v1/chat/completions",
                               completion_window="24h")
    done = wait_for(sdk, batch.id, "completed")
    assert done.request_counts.completed >= 1 and done.request_counts.failed >= 1
    assert done.request_counts.completed + done.request_counts.failed == 3
    errors = file_lines(sdk, done.error_file_id)
    assert {item["response"]["status_code"] for item in errors} == {402}
    assert {item["response"]["body"]["error"]["code"] for item in errors} == {"insufficient_credits"}
    assert gateway.held(key) == 0
    assert gateway.reconcile(key) == []


def test_batches_and_their_files_belong_to_their_account(gateway: Gateway) -> None:
    owner, other = gateway.create_key("10"), gateway.create_key("10")
    sdk = client(gateway, owner)
    batch = sdk.batches.create(input_file_id=upload(sdk, jsonl([line("a", "x")])), endpoint="/v1/chat/completions",
                               completion_window="24h")
    done = wait_for(sdk, batch.id, "completed")
    stranger = client(gateway, other)
    with pytest.raises(openai.NotFoundError):
        stranger.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        stranger.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):
        stranger.files.content(done.output_file_id or "")
    assert batch.id not in [item.id for item in stranger.batches.list()]


def test_batches_list_newest_first_in_pages(gateway: Gateway) -> None:
    key = gateway.create_key("10")
    sdk = client(gateway, key)
    file_id = upload(sdk, jsonl([line("a", "x")]))
    made = [sdk.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h").id
            for _ in range(3)]
    first = sdk.batches.list(limit=2)
    assert [item.id for item in first.data] == made[::-1][:2] and first.has_more
    rest = sdk.batches.list(limit=2, after=first.data[-1].id)
    assert [item.id for item in rest.data] == made[:1] and not rest.has_more
    assert [item.id for item in sdk.batches.list()] == made[::-1]  # the SDK's auto-paging


def test_an_anthropic_message_batch_runs_through_the_anthropic_sdk(gateway: Gateway,
                                                                  fake_anthropic: FakeAnthropic) -> None:
    key = gateway.create_key("10")
    sdk = claude(gateway, key)
    batch = sdk.messages.batches.create(requests=[
        {"custom_id": "one", "params": {"model": "claude-fake-small", "max_tokens": 20,
                                        "messages": [{"role": "user", "content": "hello claude"}]}},
        {"custom_id": "two", "params": {"model": "fake-small", "max_tokens": 20,  # an OpenAI-dialect provider
                                        "messages": [{"role": "user", "content": "hello openai"}]}},
        {"custom_id": "three", "params": {"model": "no-such-model", "max_tokens": 20,
                                          "messages": [{"role": "user", "content": "x"}]}},
    ])
    assert batch.type == "message_batch" and batch.processing_status == "in_progress"
    deadline = time.monotonic() + WAIT
    while (batch := sdk.messages.batches.retrieve(batch.id)).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(POLL)
    counts = batch.request_counts
    assert (counts.succeeded, counts.errored, counts.processing) == (2, 1, 0)
    assert batch.results_url is not None and batch.ended_at is not None
    results = {item.custom_id: item.result for item in sdk.messages.batches.results(batch.id)}
    assert results["one"].type == "succeeded" and results["two"].type == "succeeded"
    assert results["one"].message.content[0].text.endswith("hello claude")  # type: ignore[union-attr]
    assert results["two"].message.role == "assistant"  # type: ignore[union-attr]
    assert results["three"].type == "errored"
    assert results["three"].error.error.type == "not_found_error"  # type: ignore[union-attr]
    assert batch.id in [item.id for item in sdk.messages.batches.list()]
    assert gateway.held(key) == 0


def test_an_anthropic_batch_with_a_bad_request_is_refused_naming_it(gateway: Gateway) -> None:
    sdk = claude(gateway, gateway.create_key("10"))
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.messages.batches.create(requests=[
            {"custom_id": "ok", "params": {"model": "claude-fake-small", "max_tokens": 5, "messages": HELLO}},
            {"custom_id": "ok", "params": {"model": "claude-fake-small", "max_tokens": 5, "messages": HELLO}},
        ])
    assert "requests.1.custom_id" in str(refused.value)
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.messages.batches.create(requests=[
            {"custom_id": "ok", "params": {"model": "claude-fake-small", "max_tokens": 5, "messages": HELLO}},
            {"custom_id": "no", "params": {"model": "claude-fake-small", "max_tokens": 0, "messages": HELLO}},
        ])
    assert "requests.1.params.max_tokens" in str(refused.value)
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.messages.batches.create(requests=[{"custom_id": "s", "params": {
            "model": "claude-fake-small", "max_tokens": 5, "messages": HELLO, "stream": True}}])
    assert "requests.0.params.stream" in str(refused.value)


@pytest.fixture(scope="module", params=MODES)
def one_at_a_time(request: pytest.FixtureRequest, upstream: FakeUpstream, fake_anthropic: FakeAnthropic,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway that releases one line of a batch at a time."""
    config = gateway_config(upstream.url, fake_anthropic.url)  # type: ignore[attr-defined]
    with gateway_in_mode(request.param, config, tmp_path_factory.mktemp(f"batches-{request.param}"),
                         batch_max_in_flight=1, batch_step_interval=0.05) as gateway:
        yield gateway


def test_a_cancelled_batch_finishes_what_runs_and_cancels_the_rest(one_at_a_time: Gateway) -> None:
    key = one_at_a_time.create_key("10")
    sdk = client(one_at_a_time, key)
    requests = [line(f"n{index}", "pace:2:0:300") for index in range(20)]  # each line takes 0.3 s
    batch = sdk.batches.create(input_file_id=upload(sdk, jsonl(requests)), endpoint="/v1/chat/completions",
                               completion_window="24h")
    wait_for(sdk, batch.id, "in_progress")
    cancelling = sdk.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = wait_for(sdk, batch.id, "cancelled")
    counts = done.request_counts
    assert counts.total == 20 and counts.completed + counts.failed == 20 and counts.failed >= 15
    errors = file_lines(sdk, done.error_file_id)
    assert {item["error"]["code"] for item in errors} == {"batch_cancelled"}
    assert all(item["response"] is None for item in errors)
    answered = file_lines(sdk, done.output_file_id)
    assert {item["custom_id"] for item in answered} | {item["custom_id"] for item in errors} == {
        f"n{index}" for index in range(20)}
    charged = sum(row["cost_micros"] for row in usage_rows(one_at_a_time, key))
    assert len(usage_rows(one_at_a_time, key)) == len(answered)
    assert one_at_a_time.wait_for_balance(key, 10_000_000 - charged) == 10_000_000 - charged


def test_a_batch_whose_window_ends_expires_the_lines_it_did_not_run(one_at_a_time: Gateway) -> None:
    key = one_at_a_time.create_key("10")
    sdk = client(one_at_a_time, key)
    requests = [line(f"n{index}", "pace:2:0:300") for index in range(20)]
    batch = sdk.batches.create(input_file_id=upload(sdk, jsonl(requests)), endpoint="/v1/chat/completions",
                               completion_window="24h")
    wait_for(sdk, batch.id, "in_progress")
    asyncio.run(end_window(one_at_a_time, batch.id))  # as if 24 hours had passed

    done = wait_for(sdk, batch.id, "expired")
    assert done.expired_at is not None
    counts = done.request_counts
    assert counts.total == 20 and counts.completed + counts.failed == 20 and counts.failed >= 15
    errors = file_lines(sdk, done.error_file_id)
    assert {item["error"]["code"] for item in errors} == {"batch_expired"}
    assert len(usage_rows(one_at_a_time, key)) == counts.completed  # only the lines that ran are charged
    assert one_at_a_time.held(key) == 0


async def end_window(gateway: Gateway, batch_id: str) -> None:
    engine = create_engine(gateway.settings)
    try:
        async with engine.begin() as connection:
            await connection.execute(update(batches).where(batches.c.id == batch_id).values(expires_at=time.time()))
    finally:
        await engine.dispose()
