"""A fake upstream for the process-level chaos tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loadtests.fake_upstream import FakeUpstream
from tests.support.servers import ServerThread


@pytest.fixture
def upstream() -> Iterator[str]:
    with ServerThread(FakeUpstream().app, name="chaos upstream") as server:
        yield server.url
