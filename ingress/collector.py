"""How a role's process collects cyclic garbage, set once as it starts.

CPython's defaults (a young collection every 700 net allocations, an old
one once ten middle ones ran and a quarter of the old objects are new) suit
short scripts. A gateway process holding thousands of open streams has
millions of long-lived objects and allocates a few hundred thousand a
second relaying tokens: the young generation is collected every couple of
milliseconds, whatever is in flight at that instant is promoted, and the
old generation fills with objects that die soon after, so full collections
come every few seconds and each walks every object the process holds. At
10,000 open streams (``python -m loadtests.streams``) the ingress ran 53
full collections of 0.9 s (p50) to 1.6 s in four minutes: a fifth of its
time, each a stall of every stream it relays.

So each role, once its modules are imported and before it serves:
- freezes what exists by then (``gc.freeze``): the code, the config and
  the catalog are never garbage, and are never walked again (forked
  ingress processes also keep those pages shared);
- collects the young generation every ``YOUNG`` allocations, so the
  objects of a token relayed are mostly gone by then instead of promoted;
- runs a full collection only after ``OLD`` middle ones, about every
  ``YOUNG`` × ``MIDDLE`` × ``OLD`` allocations (CPython's quarter rule
  still applies on top), minutes apart under that load.

Cycles still go: young and middle collections find the cycles of requests
and tokens, which die young, and the full ones the rest, only less often.
Tests build apps in their own process and keep CPython's defaults.
"""

from __future__ import annotations

import gc

YOUNG = 50_000  # allocations between young collections (CPython: 700)
MIDDLE = 20  # young collections per middle one (CPython: 10)
OLD = 100  # middle collections before a full one is considered (CPython: 10)


def settle() -> None:
    """Set this process's collector for serving (see the module's doc)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
