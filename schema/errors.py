"""Domain errors, raised where the fact is known and mapped to each API
dialect's error format in one place (``ingress.errors``)."""

from __future__ import annotations

import math
from collections.abc import Mapping


class GatewayError(Exception):
    """Base of every error a client may see. ``status`` is the HTTP status."""

    status = 500
    type = "api_error"
    code: str | None = None
    retry_after: float | None = None  # seconds; sent as `retry-after` when set
    # The request's own headers (its job's id, provider, queue wait; its rate limits) when the error came
    # after they were known; replaced, never mutated.
    job_headers: dict[str, str] = {}

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def headers(self) -> dict[str, str]:
        return {"retry-after": f"{self.retry_after:g}"} if self.retry_after is not None else {}


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unauthenticated(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class KeyExpired(Unauthenticated):
    code = "api_key_expired"


class KeyRevoked(Unauthenticated):
    code = "api_key_revoked"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class RequestTimeout(GatewayError):
    """The client stopped sending its request (headers or body) for longer
    than the read timeout; the connection is closed."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class RequestTooLarge(GatewayError):
    """A request body larger than the gateway reads."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UnsupportedMediaType(GatewayError):
    """A request body that is not JSON by its ``Content-Type``."""

    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class HeadersTooLarge(GatewayError):
    """A request line and header fields larger than the gateway reads."""

    status = 431
    type = "invalid_request_error"
    code = "request_header_fields_too_large"


class InvalidWebhook(InvalidRequest):
    """A payment provider's event that is unsigned, stale, malformed or cannot
    be credited; nothing was credited."""

    code = "invalid_webhook"


class UnknownAccount(InvalidRequest):
    code = "unknown_account"


class AccountNotFound(NotFound):
    code = "account_not_found"


class KeyNotFound(NotFound):
    code = "key_not_found"


class DeductionExceedsAvailable(InvalidRequest):
    """An operator's deduction larger than what the account has available."""

    code = "deduction_exceeds_available"


class IdempotencyKeyReused(Conflict):
    """The same idempotency key, sent again with a different request."""

    code = "idempotency_key_reused"


class CouponNotFound(NotFound):
    code = "coupon_not_found"


class CouponExpired(InvalidRequest):
    code = "coupon_expired"


class CouponExhausted(InvalidRequest):
    code = "coupon_exhausted"


class CouponAlreadyRedeemed(Conflict):
    code = "coupon_already_redeemed"


class CouponExists(Conflict):
    code = "coupon_exists"


class InsufficientCredits(GatewayError):
    status = 402
    type = "insufficient_quota"
    code = "insufficient_credits"


class KeyLimitExceeded(GatewayError):
    """The request's worst case does not fit a spending limit of its key."""

    status = 402
    type = "insufficient_quota"
    code = "key_limit_exceeded"


class UnknownPlan(InvalidRequest):
    """A plan name the config does not have."""

    code = "unknown_plan"


class FileNotFound(NotFound):
    """No such file for this account: absent, deleted, expired or another's."""

    code = "file_not_found"


class FileTooLarge(RequestTooLarge):
    code = "file_too_large"


class ModelNotFound(NotFound):
    code = "model_not_found"


class ProviderNotFound(NotFound):
    code = "provider_not_found"


class RateLimited(GatewayError):
    """Over a rate limit. ``type_`` is the limit's unit, as OpenAI names it
    (``requests`` or ``tokens``); ``headers`` describe the limits. Without
    ``retry_after`` the request can never fit."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float | None = None, type_: str | None = None,
                 headers: Mapping[str, str] | None = None, scope: str = "") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.type = type_ or self.type
        self.scope = scope  # whose limit refused it (key, account, system): a metric's label
        self._headers = dict(headers or {})

    def headers(self) -> dict[str, str]:
        # Whole seconds for HTTP; the SDKs prefer retry-after-ms when sent.
        headers = dict(self._headers)
        if self.retry_after is not None:
            headers["retry-after"] = str(math.ceil(self.retry_after))
            headers["retry-after-ms"] = str(math.ceil(self.retry_after * 1000))
        return headers


class UpstreamError(GatewayError):
    """The provider failed; ``status`` is what the client gets (502 for 5xx)."""

    status = 502
    type = "upstream_error"
    # An error relayed from a worker carries the code it was raised with, or none.
    code: str | None = "upstream_error"

    def __init__(self, message: str, *, status: int = 502, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class GatewayTimeout(GatewayError):
    status = 504
    type = "timeout_error"
    code = "timeout"


class BatchExpired(GatewayTimeout):
    """A batch line that did not run within its batch's completion window."""

    code = "batch_expired"


class QueueTimeout(GatewayTimeout):
    """The job waited in its queue longer than its client allowed."""

    code = "queue_timeout"


class StreamBroken(GatewayError):
    """The result stream lost an event or went silent; the answer is incomplete."""

    status = 502
    type = "stream_error"
    code = "stream_interrupted"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "service_unavailable"


class ProviderUnavailable(UpstreamError):
    """The provider as a whole cannot serve: it is unreachable or refuses the
    gateway's credentials. Every model of it is affected (its circuit breaker
    counts it), unlike a failure of one model."""


class CircuitOpen(ServiceUnavailable):
    """A provider's (or one of its models') circuit is open: it is not called
    until a probe shows it has recovered, at ``retry_after`` seconds."""

    code = "circuit_open"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransportUnavailable(ServiceUnavailable):
    """A transport the gateway runs on (the result bus, the job broker, a
    shared store) could not be reached or failed mid-call: an outage, never a
    defect. Raised at the transport's edge (``scheduler.outages``) in place of
    the client library's own errors, so callers name what they survive."""


class BusUnavailable(TransportUnavailable):
    """The result bus (Redis pub/sub and job marks) failed."""


class BrokerUnavailable(TransportUnavailable):
    """The job broker (RabbitMQ) failed: a job or usage event may not be queued."""


class StoreUnavailable(TransportUnavailable):
    """A shared store (Redis: breakers, health, pool statistics, listings,
    rate limits, balances) failed."""
