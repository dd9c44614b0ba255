"""``POST /webhooks/stripe``: paid checkouts become credits, once per event.

The signature is checked over the raw body before anything is parsed, and its
timestamp must be within ``TOLERANCE`` (5 minutes) of now, in either
direction. A duplicate delivery answers 200 with ``credited: false``, so
Stripe stops retrying; a refusal answers 400 and moves no money.
"""

from __future__ import annotations

import logging
import time

import stripe
from fastapi import APIRouter, Request
from pydantic import ValidationError

from billing.topups import top_up_of
from ingress.runtime import Runtime
from schema.errors import InvalidWebhook, ServiceUnavailable
from schema.payments import StripeEvent

log = logging.getLogger(__name__)

router = APIRouter()

# Seconds a signature's timestamp may differ from now, either way (Stripe's default).
TOLERANCE = stripe.Webhook.DEFAULT_TOLERANCE


def verify_signature(body: str, header: str, secret: str) -> None:
    """Raise ``stripe.SignatureVerificationError`` unless ``header`` signs
    ``body`` at a time within ``TOLERANCE`` of now, before or after."""
    # Only the signature and the timestamp's age: Stripe's own event
    # objects would let a signed non-object body through as an AttributeError.
    stripe.WebhookSignature.verify_header(body, header, secret, TOLERANCE)
    # Stripe's library refuses only old timestamps; a signature dated ahead
    # of the clock would stay fresh for longer than the tolerance.
    signed_at = _signed_at(header)
    if signed_at > time.time() + TOLERANCE:
        # stripe declares its errors' __init__ without types.
        raise stripe.SignatureVerificationError(  # type: ignore[no-untyped-call]
            f"Timestamp outside the tolerance zone ({signed_at}): more than {TOLERANCE} s in the future", header, body)


def _signed_at(header: str) -> int:
    # Read as Stripe's library reads it (the first ``t``), which has just succeeded.
    return next(int(item[1]) for item in (part.split("=", 2) for part in header.split(",")) if item[0] == "t")


@router.post("/webhooks/stripe", include_in_schema=False)
async def stripe_webhook(request: Request) -> dict[str, bool]:
    runtime: Runtime = request.app.state.runtime
    secret = runtime.settings.stripe_webhook_secret
    if secret is None:
        raise ServiceUnavailable("Stripe webhooks are not configured: set GATEWAYZ_STRIPE_WEBHOOK_SECRET")
    payload = await request.body()
    try:
        body = payload.decode("utf-8")
        verify_signature(body, request.headers.get("stripe-signature", ""), secret.get_secret_value())
    except (UnicodeDecodeError, stripe.SignatureVerificationError) as error:
        raise InvalidWebhook(f"Invalid Stripe signature: {error}") from None
    try:
        event = StripeEvent.model_validate_json(body)
    except ValidationError as error:
        raise InvalidWebhook(f"Malformed Stripe event ({error.error_count()} errors)") from None
    top_up = top_up_of(event, runtime.settings.credits_per_usd)
    if top_up is None:
        return {"received": True, "credited": False}
    credited = await runtime.ledger.top_up(top_up.reference, top_up.account_id, top_up.amount, memo=top_up.memo)
    if credited:
        log.info("stripe event %s credited %d micro-credits to account %d", event.id, top_up.amount, top_up.account_id)
    else:
        log.info("stripe event %s was already credited; duplicate delivery ignored", event.id)
    return {"received": True, "credited": credited}
