"""Failover, retries and per-phase timeouts, in both run modes: one
candidate of a model fails on command (``fail:500@primary``) while the other
works. What the client sees (status, body, headers, stream ending), which
upstream was called, and what was charged, once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import MODES
from tests.support.gateway import Gateway, gateway_in_mode
from tests.support.resilience import Upstreams, cost_of_echo, resilience_config, two_upstreams, usage_rows

GRANT = 10_000_000


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with two_upstreams() as fakes:
        yield fakes


@pytest.fixture(scope="module", params=MODES)
def gateway(request: pytest.FixtureRequest, upstreams: Upstreams,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The primary provider gives a stream 1 s for its first event and any
    call 2 s in all; one retry, 50 ms backoff, retry-after waited up to 2 s;
    breakers that do not open within these tests."""
    config = resilience_config(upstreams, first_token_timeout=1, idle_timeout=1, timeout=2)
    with gateway_in_mode(request.param, config, tmp_path_factory.mktemp("failover"), request_timeout=20,
                         upstream_retries=1, retry_backoff=0.05, retry_after_max=2, breaker_failures=1000) as gateway:
        yield gateway


@pytest.fixture
def key(gateway: Gateway) -> str:
    return gateway.create_key("10")


def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=30)


def ask(gateway: Gateway, key: str, message: str, *, model: str = "duo",
        stream: bool = False) -> tuple[str, httpx.Headers]:
    """The answer's text and the response headers, through the openai SDK."""
    messages = [{"role": "user", "content": message}]
    raw = client(gateway, key).chat.completions.with_raw_response.create(model=model, messages=messages, stream=stream)
    if stream:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
    else:
        text = raw.parse().choices[0].message.content
    return text, raw.headers


@pytest.mark.parametrize("stream", [False, True])
def test_a_500_from_the_first_candidate_is_answered_by_the_second_and_charged_once(
        gateway: Gateway, key: str, upstreams: Upstreams, stream: bool) -> None:
    message = "fail:500@primary hello there"
    before = upstreams.seen()
    text, headers = ask(gateway, key, message, stream=stream)

    assert text == f"Echo: {message}"
    assert headers["x-gatewayz-provider"] == "backup"
    primary, backup = (now - then for now, then in zip(upstreams.seen(), before, strict=True))
    assert (primary, backup) == (2, 1), "one retry on the first candidate, then the second"
    assert gateway.wait_for_balance(key, GRANT - cost_of_echo(message)) == GRANT - cost_of_echo(message)
    rows = usage_rows(gateway, key)
    assert [(row["job_id"], row["provider"], row["cost_micros"]) for row in rows] == [
        (headers["x-gatewayz-job-id"], "backup", cost_of_echo(message))]


def test_a_retry_on_the_same_provider_can_answer(gateway: Gateway, key: str, upstreams: Upstreams) -> None:
    message = f"flaky:1:503@primary {time.time_ns()}"  # fails once, then answers
    text, headers = ask(gateway, key, message, model="solo")
    assert text == f"Echo: {message}" and headers["x-gatewayz-provider"] == "primary"
    assert gateway.wait_for_balance(key, GRANT - cost_of_echo(message)) == GRANT - cost_of_echo(message)


def test_a_429_with_a_short_retry_after_is_retried_after_it(gateway: Gateway, key: str, upstreams: Upstreams) -> None:
    message = f"flaky:1:429:1@primary {time.time_ns()}"
    started = time.monotonic()
    text, headers = ask(gateway, key, message, model="solo")
    assert text == f"Echo: {message}" and headers["x-gatewayz-provider"] == "primary"
    assert time.monotonic() - started >= 1.0, "the provider's retry-after was honoured"


def test_a_429_with_a_long_retry_after_fails_over_at_once(gateway: Gateway, key: str, upstreams: Upstreams) -> None:
    before = upstreams.seen()
    started = time.monotonic()
    text, headers = ask(gateway, key, "fail:429@primary busy")  # retry-after: 7, more than the 2 s waited
    assert headers["x-gatewayz-provider"] == "backup" and time.monotonic() - started < 5
    assert tuple(now - then for now, then in zip(upstreams.seen(), before, strict=True)) == (1, 1)


def test_a_429_from_every_candidate_reaches_the_client_with_its_retry_after(
        gateway: Gateway, key: str, upstreams: Upstreams) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        ask(gateway, key, "fail:429 everyone is busy")
    assert raised.value.response.headers["retry-after"] == "7"
    assert raised.value.body["message"].startswith("provider 'backup' answered 429")
    assert gateway.wait_for_balance(key, GRANT) == GRANT
    assert [row["cost_micros"] for row in usage_rows(gateway, key)] == [0], "settled, for nothing"


@pytest.mark.parametrize("stream", [False, True])
def test_every_candidate_failing_gives_the_last_error_and_no_charge(
        gateway: Gateway, key: str, upstreams: Upstreams, stream: bool) -> None:
    before = upstreams.seen()
    with pytest.raises(openai.APIStatusError) as raised:
        ask(gateway, key, "fail:500 all down", stream=stream)
    assert raised.value.status_code == 502
    assert raised.value.message.endswith("provider 'backup' answered 500: fake failure 500")
    assert tuple(now - then for now, then in zip(upstreams.seen(), before, strict=True)) == (2, 2)
    assert gateway.wait_for_balance(key, GRANT) == GRANT
    assert [row["cost_micros"] for row in usage_rows(gateway, key)] == [0]


def test_the_clients_own_error_is_not_failed_over(gateway: Gateway, key: str, upstreams: Upstreams) -> None:
    before = upstreams.seen()
    with pytest.raises(openai.BadRequestError) as raised:
        ask(gateway, key, "fail:400@primary bad")
    assert "fake failure 400" in raised.value.message
    assert tuple(now - then for now, then in zip(upstreams.seen(), before, strict=True)) == (1, 0)


@pytest.mark.parametrize("stream", [True, False])
def test_a_hanging_candidate_times_out_and_fails_over(gateway: Gateway, key: str, upstreams: Upstreams,
                                                      stream: bool) -> None:
    """A stream's first event is due in 1 s; a JSON answer within the 2 s total."""
    started = time.monotonic()
    text, headers = ask(gateway, key, "hang@primary wake up", stream=stream)
    elapsed = time.monotonic() - started
    assert text == "Echo: hang@primary wake up" and headers["x-gatewayz-provider"] == "backup"
    assert (1.0 if stream else 2.0) <= elapsed < 4.0, "one timeout, no retry of a hung provider"
    assert gateway.wait_for_balance(key, GRANT - cost_of_echo("hang@primary wake up")) == \
        GRANT - cost_of_echo("hang@primary wake up")


def test_an_unreachable_candidate_fails_over(gateway: Gateway, key: str) -> None:
    text, headers = ask(gateway, key, "anyone there", model="far", stream=True)
    assert text == "Echo: anyone there" and headers["x-gatewayz-provider"] == "backup"


def test_a_stream_cut_after_its_first_token_ends_with_an_error_and_is_charged(
        gateway: Gateway, key: str, upstreams: Upstreams) -> None:
    before = upstreams.seen()
    body = {"model": "duo", "stream": True, "messages": [{"role": "user", "content": "drop@primary it now"}]}
    with httpx.stream("POST", f"{gateway.base_url}/chat/completions", json=body,
                      headers={"authorization": f"Bearer {key}"}, timeout=30) as response:
        assert response.status_code == 200 and response.headers["x-gatewayz-provider"] == "primary"
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert '"content":"Echo:"' in events[1] and "[DONE]" not in events[-1]
    assert events[-1].startswith('data: {"error"') and "primary" in events[-1]
    assert tuple(now - then for now, then in zip(upstreams.seen(), before, strict=True)) == (1, 0), "no failover"
    (row,) = usage_rows(gateway, key)
    assert row["provider"] == "primary" and row["cost_micros"] > 0 and row["reported"] is False
