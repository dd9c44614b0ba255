"""Priority classes: a request lowers its plan's class, never raises it."""

from __future__ import annotations

import pytest

from scheduler.priority import BATCH_PRIORITY, MESSAGE_PRIORITY, effective_class, requested_class
from schema.errors import InvalidRequest
from schema.jobs import DEFAULT_PRIORITY, MAX_PRIORITY


def test_classes_are_ordered_within_the_queues_priorities() -> None:
    assert MAX_PRIORITY == MESSAGE_PRIORITY["realtime"] > MESSAGE_PRIORITY["standard"] > MESSAGE_PRIORITY["bulk"] \
        > BATCH_PRIORITY >= 0
    assert MESSAGE_PRIORITY["standard"] == DEFAULT_PRIORITY


@pytest.mark.parametrize(("plan", "asked", "runs"), [
    ("realtime", None, "realtime"), ("realtime", "standard", "standard"), ("realtime", "bulk", "bulk"),
    ("standard", "realtime", "standard"), ("standard", "bulk", "bulk"),
    ("bulk", "realtime", "bulk"), ("bulk", "standard", "bulk"), ("bulk", None, "bulk"),
])
def test_a_request_may_lower_its_class_never_raise_it(plan: str, asked: str | None, runs: str) -> None:
    assert effective_class(plan, requested_class(asked)) == runs  # type: ignore[arg-type]


def test_class_names_are_read_leniently_and_unknown_ones_refused() -> None:
    assert requested_class(" Bulk ") == "bulk"
    with pytest.raises(InvalidRequest, match="Unknown priority class 'fast'"):
        requested_class("fast")
