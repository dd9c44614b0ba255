"""Stripe top-ups: which account a paid checkout credits, and how much.

Credited events are ``checkout.session.completed`` once the session is paid,
and ``checkout.session.async_payment_succeeded`` (a delayed payment method
that has now cleared; its ``completed`` event came with ``unpaid``). The
account is ``metadata.account_id`` or else ``client_reference_id``; the
amount is ``metadata.credits`` (a decimal string) or else ``amount_total``
(US cents) at ``credits_per_usd``, rounded down to a whole micro-credit.
Both are range-checked before they are read as numbers: an id from 1 to
``MAX_ID``, an amount from one micro-credit to ``MAX_TOP_UP`` credits.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, InvalidOperation

from pydantic import ValidationError

from schema.accounts import MAX_ID
from schema.errors import InvalidWebhook
from schema.keys import MAX_CREDITS
from schema.money import MICROS_PER_CREDIT, MicroCredits, credits_to_micros
from schema.payments import CheckoutSession, StripeEvent

CREDITING_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})
CENTS_PER_USD = 100
MAX_TOP_UP = MAX_CREDITS  # credits: far above any real payment, far below BIGINT


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
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise InvalidWebhook(f"Event {event.id}: not a checkout session ({field}: {first['msg']})",
                             param=field) from None
    if session.payment_status != "paid":
        return None
    account_id = _account_id(event.id, session)
    amount = _amount(event.id, session, credits_per_usd)
    return TopUp(event.id, account_id, amount, f"stripe {event.type} {session.id or ''}".rstrip())


def _account_id(event_id: str, session: CheckoutSession) -> int:
    field, value = "metadata.account_id", (session.metadata or {}).get("account_id")
    if not value:
        field, value = "client_reference_id", session.client_reference_id
    if value is None:
        raise InvalidWebhook(f"Event {event_id}: no metadata.account_id or client_reference_id")
    if not value.isascii() or not value.isdigit():
        raise InvalidWebhook(f"Event {event_id}: {field} {value[:40]!r} is not a number", param=field)
    # Measured before it is read: Python reads no integer of over 4300 digits.
    if len(value.lstrip("0")) > len(str(MAX_ID)) or not 1 <= int(value) <= MAX_ID:
        raise InvalidWebhook(f"Event {event_id}: {field} {value[:40]!r} is not an account id (1 to {MAX_ID})",
                             param=field)
    return int(value)


def _amount(event_id: str, session: CheckoutSession, credits_per_usd: Decimal) -> MicroCredits:
    field, credits = "metadata.credits", (session.metadata or {}).get("credits")
    if credits is None:
        field = "amount_total"
        if session.amount_total is None:
            raise InvalidWebhook(f"Event {event_id}: neither metadata.credits nor amount_total")
        if (session.currency or "").lower() != "usd":
            raise InvalidWebhook(f"Event {event_id}: amount_total is in {session.currency!r}, not usd",
                                 param="currency")
        amount = Decimal(session.amount_total) * credits_per_usd / CENTS_PER_USD
    else:
        try:
            amount = Decimal(credits)
        except InvalidOperation:
            raise _not_credits(event_id, credits) from None
    if not amount.is_finite():
        raise _not_credits(event_id, credits)
    # Bounded in credits first: an exponent like 1e999999 overflows on the way to micro-credits.
    if not 0 < amount <= MAX_TOP_UP:
        raise _out_of_range(event_id, field)
    if credits is None:
        micros = MicroCredits(int((amount * MICROS_PER_CREDIT).to_integral_value(rounding=ROUND_DOWN)))
    else:
        try:
            micros = credits_to_micros(amount)
        except ValueError:
            raise _not_credits(event_id, credits) from None
    if micros <= 0:  # less than a micro-credit, rounded down
        raise _out_of_range(event_id, field)
    return micros


def _not_credits(event_id: str, credits: str | None) -> InvalidWebhook:
    return InvalidWebhook(f"Event {event_id}: metadata.credits {str(credits)[:40]!r} is not an amount of credits",
                          param="metadata.credits")


def _out_of_range(event_id: str, field: str) -> InvalidWebhook:
    return InvalidWebhook(f"Event {event_id}: a top-up ({field}) must be positive and at most {MAX_TOP_UP} credits",
                          param=field)
