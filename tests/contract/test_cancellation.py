"""A client that leaves cancels its job, in both modes: a queued job never
reaches the upstream, a running one has its upstream connection closed,
and the client is charged only for what was produced (nothing when nothing
was); a stream that runs to its end is not touched."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from billing.pricing import cost_of
from loadtests.fake_upstream import FakeUpstream
from schema.jobs import Usage
from tests.conftest import MODES
from tests.contract.test_priorities import GatedUpstream, one_at_a_time, queued, serial_config
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.gateway import Gateway, gateway_in_mode
from tests.support.servers import serving

GRANT = 1_000_000  # micro-credits: what create_key("1") grants


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


def estimate(gateway: Gateway, model: str, payload: dict[str, Any], output: str) -> int:
    """The charge of a job stopped with ``output`` produced and no usage
    reported: about four characters a token, prompt and output."""
    usage = Usage(input_tokens=-(-len(orjson.dumps(payload)) // 4), output_tokens=-(-len(output) // 4), reported=False)
    return cost_of(usage, gateway.server.app.state.runtime.catalog.route(model).price)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def test_an_abandoned_stream_closes_the_upstream_call_and_is_charged_what_was_produced(
        gateway: Gateway, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    key = gateway.create_key("1")
    text = f"stall:3 abandoned-{uuid.uuid4().hex[:8]}"  # "Echo: w w w", then nothing until the client goes
    messages = [{"role": "user", "content": text}]
    client = openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=30)
    stream = client.chat.completions.create(model="fake-small", messages=messages, max_tokens=50,  # type: ignore[arg-type]
                                            stream=True)
    said = ""
    for chunk in stream:
        said += chunk.choices[0].delta.content or ""
        if said == "Echo: w w w":
            break
    stream.close()

    wait_until(lambda: text in upstream.left, "the upstream saw its connection close")
    assert gateway.wait_until_settled(key) == 0, "no hold is left"
    expected = estimate(gateway, "fake-small", {"messages": messages, "max_tokens": 50}, "Echo: w w w")
    assert gateway.wait_for_balance(key, GRANT - expected) == GRANT - expected
    assert expected > 0
    assert errors(caplog) == []


def test_an_abandoned_anthropic_stream_is_charged_the_input_the_provider_reported(
        gateway: Gateway, fake_anthropic: FakeAnthropic) -> None:
    key = gateway.create_key("1")
    text = f"stall:5 abandoned-{uuid.uuid4().hex[:8]}"
    client = anthropic.Anthropic(api_key=key, base_url=gateway.url, max_retries=0, timeout=30)
    stream = client.messages.create(model="claude-fake-small", max_tokens=50, stream=True,
                                    messages=[{"role": "user", "content": text}])
    said = ""
    for event in stream:
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            said += event.delta.text
        if said == "Echo: w w w w w":
            break
    stream.close()

    wait_until(lambda: text in fake_anthropic.left, "the provider saw its connection close")
    assert gateway.wait_until_settled(key) == 0
    # message_start reported the input (two words: two tokens) and one output
    # token; the output produced (15 characters) is estimated at 4 tokens.
    usage = Usage(input_tokens=2, output_tokens=4, reported=False)
    expected = cost_of(usage, gateway.server.app.state.runtime.catalog.route("claude-fake-small").price)
    assert gateway.wait_for_balance(key, GRANT - expected) == GRANT - expected


def test_a_json_request_given_up_aborts_the_upstream_call_and_costs_nothing(
        gateway: Gateway, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    key = gateway.create_key("1")
    text = f"hang given-up-{uuid.uuid4().hex[:8]}"
    client = openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=1.0)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="fake-small", max_tokens=5, messages=[{"role": "user", "content": text}])

    wait_until(lambda: text in upstream.left, "the upstream saw its connection close")
    assert gateway.wait_until_settled(key) == 0
    assert gateway.balance(key) == GRANT
    assert errors(caplog) == []


def test_a_stream_read_to_its_end_is_not_cancelled(gateway: Gateway, upstream: FakeUpstream) -> None:
    key = gateway.create_key("1")
    text = f"slow completed-{uuid.uuid4().hex[:8]}"
    client = openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=30)
    stream = client.chat.completions.create(model="fake-small", max_tokens=50, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": text}])
    chunks = list(stream)
    said = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert said == f"Echo: {text}"
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (2, 3)
    reported = cost_of(Usage(input_tokens=2, output_tokens=3), gateway.server.app.state.runtime.catalog.route(
        "fake-small").price)
    assert gateway.wait_until_settled(key) == 0
    assert gateway.wait_for_balance(key, GRANT - reported) == GRANT - reported
    time.sleep(0.2)
    assert text not in upstream.left


@pytest.fixture(scope="module")
def gated() -> Iterator[GatedUpstream]:
    with serving(GatedUpstream(), "gated upstream") as fake:
        yield fake


@pytest.fixture(scope="module", params=MODES)
def serial(request: pytest.FixtureRequest, gated: GatedUpstream,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway whose only pool serves one job at a time."""
    data_dir = tmp_path_factory.mktemp(f"cancel-serial-{request.param}")
    with gateway_in_mode(request.param, serial_config(gated.url), data_dir,  # type: ignore[attr-defined]
                         roles=one_at_a_time, request_timeout=20) as gateway:
        yield gateway


def test_a_queued_job_whose_client_left_never_reaches_the_upstream(
        serial: Gateway, gated: GatedUpstream, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ingress.cancellation")
    busy, leaving = serial.create_key("1"), serial.create_key("1")
    gated.gate.clear()
    gated.arrivals.clear()
    body = {"model": "serial-model", "max_tokens": 5, "messages": [{"role": "user", "content": "gate"}]}
    answered: dict[str, httpx.Response] = {}

    def hold_the_pool() -> None:
        answered["gate"] = httpx.post(f"{serial.base_url}/chat/completions", json=body,
                                      headers={"authorization": f"Bearer {busy}"}, timeout=30)

    holder = threading.Thread(target=hold_the_pool, daemon=True)
    holder.start()
    wait_until(lambda: gated.arrivals == ["gate"], "the gate job holds the pool's only slot")

    text = f"queued-{uuid.uuid4().hex[:8]}"
    with pytest.raises(httpx.ReadTimeout):  # the client gives up while its job waits in the queue
        httpx.post(f"{serial.base_url}/chat/completions", headers={"authorization": f"Bearer {leaving}"},
                   json={**body, "messages": [{"role": "user", "content": text}]}, timeout=1.0)
    assert queued(serial, "serial") == 1
    wait_until(lambda: any(record.name == "ingress.cancellation" and "cancelled" in record.getMessage()
                           for record in caplog.records),
               "the ingress cancelled the job")

    gated.gate.set()
    holder.join(timeout=30)
    assert answered["gate"].status_code == 200
    assert serial.wait_until_settled(leaving) == 0
    assert serial.balance(leaving) == GRANT
    assert queued(serial, "serial") == 0
    assert gated.arrivals == ["gate"], "the cancelled job never reached the upstream"
