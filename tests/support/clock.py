"""The real clock, for tests of a running gateway that count a key's spend
per UTC day or month: they cannot hand the gateway a moment, so they keep
clear of midnight rather than count in two days."""

from __future__ import annotations

import time

DAY = 86_400  # seconds; Unix time has no leap seconds


def clear_of_midnight(margin: float = 60) -> None:
    """Sleep past 00:00 UTC if less than ``margin`` seconds of the day are
    left (a test's requests would otherwise fall on both sides of it)."""
    left = DAY - time.time() % DAY
    if left < margin:
        time.sleep(left + 1)
