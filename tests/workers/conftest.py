"""A fake Anthropic API on loopback, shared by the worker tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_anthropic import FakeAnthropic
from tests.support.servers import ServerThread

ANTHROPIC_KEY = "sk-ant-upstream-secret-0123456789"


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic(api_key=ANTHROPIC_KEY)
    with ServerThread(fake.app, name="fake anthropic") as server:
        fake.url = server.url
        yield fake
