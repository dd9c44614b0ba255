"""Where the transport libraries' errors become the domain's: each Redis or
AMQP call of a transport or store runs inside one of these, and what leaves
it is a ``schema.errors.TransportUnavailable`` (``BusUnavailable``,
``BrokerUnavailable``, ``StoreUnavailable``). Only the library's errors of
reaching its server are translated: a reply Redis refuses for a malformed
command or a failing script (``ResponseError``) is a defect and surfaces as
itself, so it is never logged as an outage.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schema.errors import TransportUnavailable

# Redis could not be reached, or refuses writes for now (a replica, out of
# memory): not the caller's fault. OSError covers sockets and asyncio's
# TimeoutError (an alias of the builtin, an OSError).
REDIS_OUTAGES: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, ReadOnlyError,
                                                  OutOfMemoryError, OSError)

# aio-pika's own list of what a lost connection or channel raises
# (``RuntimeError`` among them: "connection closed", "channel not opened").
AMQP_OUTAGES: tuple[type[BaseException], ...] = tuple(CONNECTION_EXCEPTIONS)


def reaching_redis(unavailable: type[TransportUnavailable], what: str) -> AbstractContextManager[None]:
    """Raise ``unavailable`` (naming ``what``) for a Redis outage within."""
    return _translating(REDIS_OUTAGES, unavailable, what)


def reaching_broker(unavailable: type[TransportUnavailable], what: str) -> AbstractContextManager[None]:
    """Raise ``unavailable`` (naming ``what``) for an AMQP outage within."""
    return _translating(AMQP_OUTAGES, unavailable, what)


@contextmanager
def _translating(outages: tuple[type[BaseException], ...], unavailable: type[TransportUnavailable],
                 what: str) -> Iterator[None]:
    try:
        yield
    except outages as error:
        raise unavailable(f"{what} is unreachable: {str(error) or type(error).__name__}") from error
