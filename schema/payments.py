"""Stripe webhook events: the fields the gateway reads (the rest is ignored).

See https://docs.stripe.com/api/events/object and
https://docs.stripe.com/api/checkout/sessions/object.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class StripeEventData(BaseModel):
    object: dict[str, Any]


class StripeEvent(BaseModel):
    id: str = Field(min_length=1, max_length=200)
    type: str
    data: StripeEventData


class CheckoutSession(BaseModel):
    id: str | None = None
    client_reference_id: str | None = None
    metadata: dict[str, str] | None = None  # Stripe's metadata values are strings
    amount_total: int | None = None  # in the currency's smallest unit (cents)
    currency: str | None = None
    payment_status: str | None = None  # paid | unpaid | no_payment_required
