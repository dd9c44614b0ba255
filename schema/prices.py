"""List prices: what a model costs upstream, in US dollars per million tokens,
and the exact arithmetic that turns one into a price in credits.

The price list is `genai-prices` (pydantic/genai-prices), read from the table
shipped inside the installed package, never fetched: its auto-updater
(``genai_prices.UpdatePrices``) is never started, and lookups read the
bundled table itself rather than the library's process-wide snapshot, which
that updater (started by any other library in the process) would replace.
List prices change when the package is upgraded, visibly in the lock file.

The gateway charges one flat price per input token and one per output token.
Where the library's price for a model has more shapes than that, the flat
price is the one that never charges less than the upstream does:

- tiered prices (a higher rate past a prompt size): the highest tier;
- time-of-day prices (peak and off-peak): the highest rate of the day;
- dated prices: the one in effect at ``as_of`` (the config's load); a change
  dated later is reported, since it takes a restart after that date.

Units other than input and output tokens (cache writes, per-request fees,
searches, audio, images) are not part of a gateway price.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal, Inexact, InvalidOperation, Rounded, localcontext
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from genai_prices import types as genai

# Config-sized decimals multiply exactly far below this precision; Inexact
# turns the impossible case into an error instead of a rounded price.
_EXACT = Context(prec=100, traps=[Inexact, Rounded, InvalidOperation])


@dataclass(frozen=True, slots=True)
class ListPrice:
    """A price list's flat token prices for one model, US dollars per million tokens."""

    provider: str  # the list's provider id
    model: str  # the list's model id
    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    notes: tuple[str, ...] = ()  # how a richer price became a flat one


class PriceList(Protocol):
    """Where list prices come from (the installed genai-prices; a fake in tests)."""

    name: str  # appears in price sources: ``genai-prices:openai:gpt-4o-mini``

    def knows(self, provider: str) -> bool:
        """Whether ``provider`` is one of the list's provider ids."""
        ...

    def lookup(self, provider: str, model: str) -> ListPrice | None:
        """The flat price of ``model`` (matched the list's way: dated ids,
        aliases) under a known ``provider``; None if the list has no token
        price for it."""
        ...


class GenaiPrices:
    """The genai-prices table bundled with the installed package."""

    name = "genai-prices"

    def __init__(self, as_of: datetime | None = None, providers: list[genai.Provider] | None = None) -> None:
        if providers is None:
            # Importing the bundled table takes about half a second: only when prices are resolved.
            from genai_prices.data import providers as bundled

            providers = bundled
        self.as_of = as_of or datetime.now(UTC)
        self._providers = list(providers)
        self._by_id = {provider.id: provider for provider in self._providers}

    def __str__(self) -> str:
        return f"genai-prices {importlib.metadata.version('genai-prices')} as of {self.as_of:%Y-%m-%d %H:%M} UTC"

    def knows(self, provider: str) -> bool:
        return provider.lower() in self._by_id

    def lookup(self, provider: str, model: str) -> ListPrice | None:
        entry = self._by_id[provider.lower()]
        info = entry.find_model(model, all_providers=self._providers)
        return self._flat(entry.id, info) if info is not None else None

    def _flat(self, provider: str, info: genai.ModelInfo) -> ListPrice | None:
        from genai_prices.types import StartDateConstraint, TimeOfDateConstraint

        notes: list[str] = []
        if not isinstance(info.prices, list):
            candidates = [info.prices]
        else:
            # The library uses the last entry whose constraint holds, else the first.
            conditional = info.prices
            dated = [i for i, c in enumerate(conditional) if not isinstance(c.constraint, TimeOfDateConstraint)
                     and (c.constraint is None or c.constraint.active(self.as_of))]
            current = dated[-1] if dated else 0
            candidates = [conditional[current].prices]
            for later in conditional[current + 1:]:
                if isinstance(later.constraint, TimeOfDateConstraint):
                    candidates.append(later.prices)
            if len(candidates) > 1:
                notes.append("time-of-day prices: the highest rate of the day")
            for change in conditional:
                if isinstance(change.constraint, StartDateConstraint) and not change.constraint.active(self.as_of):
                    notes.append(f"the list price changes on {change.constraint.start_date}: restart after then")
        inputs = [_highest(getattr(price, "input_mtok", None), notes) for price in candidates]
        outputs = [_highest(getattr(price, "output_mtok", None), notes) for price in candidates]
        if all(price is None for price in inputs + outputs):
            return None
        return ListPrice(
            provider=provider,
            model=info.id,
            input_usd_per_mtok=max((p for p in inputs if p is not None), default=Decimal(0)),
            output_usd_per_mtok=max((p for p in outputs if p is not None), default=Decimal(0)),
            notes=tuple(dict.fromkeys(notes)),
        )


def _highest(price: object, notes: list[str]) -> Decimal | None:
    """A flat price from the library's: a number, or the top of its tiers."""
    from genai_prices.types import TieredPrices

    if price is None:
        return None
    if isinstance(price, TieredPrices):
        notes.append("tiered prices: the highest tier")
        return max(_decimal(value) for value in (price.base, *(tier.price for tier in price.tiers)))
    return _decimal(price)


def _decimal(value: object) -> Decimal:
    if isinstance(value, float):  # never seen in the bundled table; floats go through their shortest repr
        value = Decimal(str(value))
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise ValueError(f"the price list has an invalid price {value!r}")
    return value


def sell_price(usd_per_mtok: Decimal, credits_per_usd: Decimal, markup_percent: Decimal) -> Decimal:
    """Credits per million tokens for a list price: converted at
    ``credits_per_usd``, then marked up by ``markup_percent``. Exact (an
    inexact result raises ``decimal.Inexact``); trailing zeros dropped."""
    with localcontext(_EXACT):
        price = usd_per_mtok * credits_per_usd * (1 + markup_percent / 100)
        return _plain(price)


def _plain(value: Decimal) -> Decimal:
    """The same number without trailing zeros, never in exponent form (``1E+1`` is ``10``)."""
    normal = value.normalize()
    exponent = normal.as_tuple().exponent
    return normal.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else normal
