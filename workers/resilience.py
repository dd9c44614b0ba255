"""What an upstream failure means, decided in one place: which circuit
breaker it counts against, and whether the job retries on the same provider
(after how long), fails over to the model's next candidate, or ends with the
error.

The policy, before anything has reached the client:

| failure | breaker | next step |
|---|---|---|
| unreachable, refused credentials (``ProviderUnavailable``) | provider | retry, then fail over |
| 5xx, a broken or malformed answer | provider + model | retry, then fail over |
| timeout (connect excepted): first token, idle, total | provider + model | fail over at once |
| 404 (the provider does not know the model) | provider + model | fail over at once |
| 429 | none: the provider is alive, only busy | retry after its ``retry-after`` (1), then fail over |
| open circuit | (it is the breaker) | fail over at once |
| other 4xx (the request's own fault) | none | the client gets it |

(1) if that is at most ``retry_after_max``, else after the backoff; a longer
``retry-after`` fails over at once.

A retry waits the upstream's ``retry-after`` or an exponential backoff with
jitter, and never past the job's deadline (a wait that would pass it fails
over at once). With no candidate left, the client gets the last error.
After the first event reached the client nothing is retried: the stream
ends with an error event (``workers.pool``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from schema.errors import CircuitOpen, GatewayError, GatewayTimeout, ProviderUnavailable
from schema.settings import Settings

Scope = Literal["provider", "model"]


def breaker_scope(error: BaseException) -> Scope | None:
    """Which breaker a failure counts against; None: it says nothing about
    the provider's health (the client's own error, a rate limit, a cancel)."""
    if isinstance(error, CircuitOpen) or not isinstance(error, GatewayError):
        return None
    if isinstance(error, ProviderUnavailable):
        return "provider"
    if isinstance(error, GatewayTimeout) or error.status >= 500 or error.status == 404:
        return "model"
    return None


def fails_over(error: GatewayError) -> bool:
    """Whether another candidate might answer where this one failed."""
    return isinstance(error, (CircuitOpen, GatewayTimeout)) or error.status >= 500 or error.status in (404, 429)


@dataclass(frozen=True, slots=True)
class Retry:
    delay: float


@dataclass(frozen=True, slots=True)
class FailOver:
    pass


@dataclass(frozen=True, slots=True)
class GiveUp:
    pass


Step = Retry | FailOver | GiveUp


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 1
    backoff: float = 0.25
    backoff_max: float = 4.0
    retry_after_max: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(retries=settings.upstream_retries, backoff=settings.retry_backoff,
                   retry_after_max=settings.retry_after_max)

    def next_step(self, error: GatewayError, *, retried: int, remaining: float, candidates_left: bool) -> Step:
        """After the ``retried``-th retry on this provider failed with
        ``error``, ``remaining`` seconds before the job's deadline."""
        if not fails_over(error):
            return GiveUp()
        onward: Step = FailOver() if candidates_left else GiveUp()
        if isinstance(error, (CircuitOpen, GatewayTimeout)) or error.status == 404 or retried >= self.retries:
            return onward
        if error.retry_after is not None and error.retry_after > self.retry_after_max:
            return onward  # waiting that long here would hold the job hostage: let another candidate try
        delay = error.retry_after if error.retry_after is not None else self.backoff_delay(retried)
        return Retry(delay) if delay < remaining else onward

    def backoff_delay(self, retried: int) -> float:
        """Exponential, with "equal jitter": half fixed, half random, so
        workers that failed together do not retry together."""
        ceiling: float = min(self.backoff_max, self.backoff * 2**retried)
        return ceiling / 2 + random.uniform(0, ceiling / 2)
