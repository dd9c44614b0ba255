"""A silent upstream or worker never hangs the client: the deadline and the
idle timeout end the request with a clear error, in both modes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from loadtests.fake_upstream import FakeUpstream
from tests.conftest import MODES, gateway_config
from tests.support.gateway import Gateway, gateway_in_mode


@pytest.fixture(scope="module", params=MODES)
def impatient(request: pytest.FixtureRequest, upstream: FakeUpstream,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway whose requests must finish within 2 s, with 1 s of silence allowed."""
    config = gateway_config(upstream.url)  # type: ignore[attr-defined]
    data_dir: Path = tmp_path_factory.mktemp("impatient")
    with gateway_in_mode(request.param, config, data_dir, request_timeout=2.0, stream_idle_timeout=1.0) as gateway:
        yield gateway


@pytest.mark.parametrize("stream", [False, True])
def test_hanging_upstream_gets_504(impatient: Gateway, stream: bool) -> None:
    key = impatient.create_key("1")
    client = openai.OpenAI(api_key=key, base_url=impatient.base_url, max_retries=0, timeout=30)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="fake-small", messages=[{"role": "user", "content": "hang"}],
                                       stream=stream)
    assert raised.value.status_code == 504
    assert raised.value.body["type"] == "timeout_error"
    assert impatient.wait_for_balance(key, 1_000_000) == 1_000_000


def test_slow_but_steady_stream_is_not_cut(impatient: Gateway) -> None:
    key = impatient.create_key("1")
    client = openai.OpenAI(api_key=key, base_url=impatient.base_url, max_retries=0, timeout=30)
    chunks = list(client.chat.completions.create(
        model="fake-small", messages=[{"role": "user", "content": "slow and steady wins"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: slow and steady wins"
