"""Proving that a check of a deployment file can fail: it passes the file
as it is, and finds a problem once the file is broken one way."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def assert_noticed(check: Callable[[T], list[str]], files: T, change: Callable[[T], None]) -> None:
    broken = copy.deepcopy(files)
    assert check(broken) == []
    change(broken)
    assert check(broken) != []
