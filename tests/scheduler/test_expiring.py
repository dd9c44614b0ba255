"""The embedded result bus's expiring entries (job marks, cancellations):
each lapses after its time, live ones survive the pruning of lapsed ones,
and lapsed ones do not pile up."""

from __future__ import annotations

import time

from scheduler.result_bus.memory import PRUNE_FLOOR, Expiring


def test_an_entry_lapses_after_its_time() -> None:
    entries: Expiring[str] = Expiring()
    entries.put("short", "a", 0.05)
    entries.put("long", "b", 60)
    assert entries.get("short") == "a" and entries.get("long") == "b"
    time.sleep(0.1)
    assert entries.get("short") is None and entries.get("long") == "b"


def test_lapsed_entries_are_dropped_and_live_ones_kept() -> None:
    entries: Expiring[int] = Expiring()
    for index in range(PRUNE_FLOOR):
        entries.put(f"live-{index}", index, 60)
    for index in range(5 * PRUNE_FLOOR):
        entries.put(f"gone-{index}", index, -1)  # lapsed as soon as put
    assert len(entries._entries) <= 2 * PRUNE_FLOOR + 1
    assert all(entries.get(f"live-{index}") == index for index in range(PRUNE_FLOOR))
