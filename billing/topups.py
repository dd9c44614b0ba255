"""Stripe top-ups: which account a paid checkout credits, and how much.

Credited events are ``checkout.session.completed`` once the session is paid,
and ``checkout.session.async_payment_succeeded`` (a delayed payment method
that has now cleared; its ``completed`` event came with ``unpaid``). The
account is ``metadata.account_id`` or else ``client_reference_id``; the
amount is ``metadata.credits`` (a decimal string) or else ``amount_total``
(US cents) at ``credits_per_usd``, rounded down to a whole micro-credit.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, InvalidOperation

from pydantic import ValidationError

from schema.errors import InvalidWebhook
from schema.money import MICROS_PER_CREDIT, MicroCredits, credits_to_micros
from schema.payments import CheckoutSession, StripeEvent

CREDITING_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})
CENTS_PER_USD = 100
MAX_TOP_UP = MicroCredits(10**9 * MICROS_PER_CREDIT)  # far above any real payment, far below BIGINT


@dataclass(frozen=True, slots=True)
class TopUp:
    reference: str  # the Stripe event id: each event credits once
    account_id: int
    amount: MicroCredits
    memo: str


def top_up_of(event: StripeEvent, credits_per_usd: Decimal) -> TopUp | None:
    """The credit a Stripe event pays for; None when it pays for nothing."""
    if event.type not in CREDITING_EVENTS:
        return None
    try:
        session = CheckoutSession.model_validate(event.data.object)
    except ValidationError as error:
        raise InvalidWebhook(f"Event {event.id}: not a checkout session ({error.error_count()} errors)") from None
    if session.payment_status != "paid":
        return None
    account_id = _account_id(event.id, session)
    amount = _amount(event.id, session, credits_per_usd)
    return TopUp(event.id, account_id, amount, f"stripe {event.type} {session.id or ''}".rstrip())


def _account_id(event_id: str, session: CheckoutSession) -> int:
    value = (session.metadata or {}).get("account_id") or session.client_reference_id
    if value is None:
        raise InvalidWebhook(f"Event {event_id}: no metadata.account_id or client_reference_id")
    if not value.isascii() or not value.isdigit():
        raise InvalidWebhook(f"Event {event_id}: account id {value!r} is not a number")
    return int(value)


def _amount(event_id: str, session: CheckoutSession, credits_per_usd: Decimal) -> MicroCredits:
    credits = (session.metadata or {}).get("credits")
    if credits is not None:
        try:
            amount = credits_to_micros(Decimal(credits))
        except (InvalidOperation, ValueError, OverflowError):
            raise InvalidWebhook(f"Event {event_id}: metadata.credits {credits!r} is not an amount of credits") from None
    else:
        if session.amount_total is None:
            raise InvalidWebhook(f"Event {event_id}: neither metadata.credits nor amount_total")
        if (session.currency or "").lower() != "usd":
            raise InvalidWebhook(f"Event {event_id}: amount_total is in {session.currency!r}, not usd")
        micros = Decimal(session.amount_total) * credits_per_usd * MICROS_PER_CREDIT / CENTS_PER_USD
        amount = MicroCredits(int(micros.to_integral_value(rounding=ROUND_DOWN)))
    if not 0 < amount <= MAX_TOP_UP:
        raise InvalidWebhook(f"Event {event_id}: a top-up must be positive and at most {MAX_TOP_UP // MICROS_PER_CREDIT} credits")
    return amount
