"""Where provider health lives: the recent outcomes of each provider, from
requests and from probes, in this process (embedded mode,
``workers.health_store.memory``) or in Redis, shared by every worker, prober
and ingress (distributed mode, ``workers.health_store.redis``).

Each provider and source keeps its last ``OUTCOMES_KEPT`` outcomes, none
older than ``OUTCOMES_WINDOW``. The store also hands out the prober's rounds
(``claim_round``), so that however many probe chains a restart leaves
behind, one round runs per interval, and a round redelivered after its
prober died carries its chain on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol

from schema.errors import StoreUnavailable
from schema.health import OUTCOMES_WINDOW, HealthSource, Outcome

Recent = dict[str, dict[HealthSource, list[Outcome]]]  # provider -> source -> outcomes, newest first


class Observed(NamedTuple):
    """One outcome to record, and whose it is."""

    provider: str
    source: HealthSource
    outcome: Outcome


class HealthUnavailable(StoreUnavailable):
    """The shared health state cannot be read or written just now."""


class HealthStore(Protocol):
    async def record(self, outcomes: Iterable[Observed]) -> None:
        """Add outcomes, each newest of its provider and source when added (in order)."""
        ...

    async def recent(self, providers: Iterable[str]) -> Recent:
        """Each provider's recent outcomes per source, newest first."""
        ...

    async def claim_round(self, chain: str, seconds: float) -> bool:
        """True for the first chain to claim a round in ``seconds`` (that
        chain probes now), and for that same chain again while its claim
        holds: a round whose prober died is handed to another prober, and
        must carry its chain on, not end it."""
        ...

    async def claim_successor(self, chain: str, number: int, seconds: float) -> bool:
        """True for the first run of round ``number`` of ``chain`` to ask in
        ``seconds``: that one sends round ``number + 1``."""
        ...


def fresh(outcomes: Iterable[Outcome], now: float) -> list[Outcome]:
    """The outcomes still inside ``OUTCOMES_WINDOW``."""
    return [outcome for outcome in outcomes if outcome.at > now - OUTCOMES_WINDOW]
