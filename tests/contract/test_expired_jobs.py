"""A job that waits in its queue past its deadline is never run: its
client gets a 504, and its hold is released at once (not by the sweeper a
minute later) with a zero charge on record, in both modes."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import openai
import pytest

from ingress.runtime import Runtime
from loadtests.fake_upstream import FakeUpstream
from schema.catalog import parse_config
from tests.conftest import MODES, UPSTREAM_KEY
from tests.support.gateway import Gateway, gateway_in_mode

PRICE = {"input_price_per_mtok": Decimal("1.00"), "output_price_per_mtok": Decimal("2.00")}


def no_worker_for_idle(runtime: Runtime) -> None:
    """Every role but a pool for provider ``idle``: its jobs only wait."""
    runtime.start_pool("busy", 4)
    runtime.start_billing()


@pytest.fixture(scope="module", params=MODES)
def unserved(request: pytest.FixtureRequest, upstream: FakeUpstream,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    url = f"{upstream.url}/v1"  # type: ignore[attr-defined]
    provider = {"adapter": "openai", "base_url": url, "api_key_env": "FAKE_KEY"}
    config = parse_config({"providers": {"idle": provider, "busy": provider},
                           "models": {"idle-model": {"providers": ["idle"], **PRICE},
                                      "busy-model": {"providers": ["busy"], **PRICE}}}, {"FAKE_KEY": UPSTREAM_KEY})
    data_dir = tmp_path_factory.mktemp(f"expired-{request.param}")
    with gateway_in_mode(request.param, config, data_dir, roles=no_worker_for_idle, request_timeout=2.0) as gateway:
        yield gateway


@pytest.mark.parametrize("stream", [False, True])
def test_a_job_expired_in_its_queue_is_released_at_once_and_charged_nothing(unserved: Gateway, stream: bool) -> None:
    key = unserved.create_key("1")
    client = openai.OpenAI(api_key=key, base_url=unserved.base_url, max_retries=0, timeout=30)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="idle-model", messages=[{"role": "user", "content": "anyone?"}],
                                       stream=stream)
    assert raised.value.status_code == 504
    assert raised.value.body["type"] == "timeout_error"

    # The sweeper would release it a minute after its deadline: well past this wait.
    assert unserved.wait_until_settled(key, timeout=15) == 0
    assert unserved.balance(key) == 1_000_000
    usage = httpx.get(f"{unserved.base_url.removesuffix('/v1')}/user/usage",
                      headers={"authorization": f"Bearer {key}"}).json()["data"]
    assert [(row["model"], row["cost_micros"], row["input_tokens"], row["output_tokens"]) for row in usage] == \
        [("idle-model", 0, 0, 0)], "settled once, at zero, by the dead-letter reader (the sweeper records no usage)"

    # The other pool was never disturbed.
    answer = client.chat.completions.create(model="busy-model", messages=[{"role": "user", "content": "hello"}])
    assert answer.choices[0].message.content == "Echo: hello"
