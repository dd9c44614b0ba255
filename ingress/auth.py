"""API keys: generated once, stored only as an HMAC-SHA256 hash, and looked
up through a small per-process cache so the hot path skips the database
(one lookup per key however many requests miss it at once); and the
operator's admin token."""

from __future__ import annotations

import asyncio
import functools
import hmac
import secrets
import time
from collections import OrderedDict
from pathlib import Path

from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.requests import Request

from billing.ledger import KeyOwner, Ledger
from billing.limits import check_usable
from schema.errors import PermissionDenied, ServiceUnavailable, Unauthenticated
from schema.settings import Settings

KEY_PREFIX = "gz-"
# A lookup that found no free database connection in time: try again shortly.
LOOKUP_RETRY_AFTER = 1.0


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(secret: bytes, key: str) -> str:
    # hmac.digest: OpenSSL's one-shot HMAC, without hmac.new's Python object per request.
    return hmac.digest(secret, key.encode(), "sha256").hex()


def key_secret(settings: Settings) -> bytes:
    """The configured secret, or one generated once and kept in the data dir."""
    if settings.key_secret:
        return settings.key_secret.encode()
    path: Path = settings.data_dir / "key_secret"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip().encode()


def presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.headers.get("x-api-key") or None


class Authenticator:
    """Resolves presented keys to their owners.

    Known keys are cached for ``ttl`` seconds: a key revoked, or whose
    expiry changed, in another process is seen within that time (``forget``
    drops a key at once in this one). Expiry itself is checked on every
    request. Unknown keys are never cached, so guessing cannot fill memory.
    Credit, limits and revocation are not cached for spending: admission
    checks them with a hold.

    A key missing from the cache is looked up once however many of its
    requests arrive meanwhile (they share the lookup's answer, or its error):
    a burst on a fresh process or after the ``ttl`` would otherwise queue
    one statement per request on the database's small pool. A lookup that
    waited past the pool's timeout is a 503, not a 500.
    """

    def __init__(self, ledger: Ledger, secret: bytes, *, ttl: float = 10.0, size: int = 10_000) -> None:
        self._ledger = ledger
        self._secret = secret
        self._ttl = ttl
        self._size = size
        self._known: OrderedDict[str, tuple[float, KeyOwner]] = OrderedDict()
        self._looking_up: dict[str, asyncio.Future[KeyOwner | None]] = {}
        # Bumped by ``forget``: a lookup begun before it does not refill the cache.
        self._generation = 0

    async def __call__(self, request: Request) -> KeyOwner:
        key = presented_key(request)
        if not key:
            raise Unauthenticated("Missing API key: send it as `Authorization: Bearer <key>`")
        key_hash = hash_key(self._secret, key)
        owner = await self._owner(key_hash)
        check_usable(revoked=owner.revoked, expires_at=owner.expires_at, now=time.time())
        return owner

    async def _owner(self, key_hash: str) -> KeyOwner:
        cached = self._known.get(key_hash)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        lookup = self._looking_up.get(key_hash)
        if lookup is None:
            lookup = self._looking_up[key_hash] = asyncio.ensure_future(self._look_up(key_hash, self._generation))
            lookup.add_done_callback(functools.partial(self._looked_up, key_hash))
        try:
            # Shielded: a request cancelled (its client gone) leaves the lookup to the others.
            owner = await asyncio.shield(lookup)
        except PoolTimeout:
            busy = ServiceUnavailable("The gateway's database is busy; retry shortly")
            busy.retry_after = LOOKUP_RETRY_AFTER
            raise busy from None
        if owner is None:
            raise Unauthenticated("Incorrect API key provided")
        return owner

    async def _look_up(self, key_hash: str, generation: int) -> KeyOwner | None:
        owner = await self._ledger.key_owner(key_hash)
        if owner is None:
            self._known.pop(key_hash, None)
        elif generation == self._generation:
            self._known[key_hash] = (time.monotonic() + self._ttl, owner)
            self._known.move_to_end(key_hash)
            if len(self._known) > self._size:
                self._known.popitem(last=False)
        return owner

    def _looked_up(self, key_hash: str, lookup: asyncio.Future[KeyOwner | None]) -> None:
        del self._looking_up[key_hash]
        if not lookup.cancelled():
            lookup.exception()  # its waiters raise it; retrieved here for when every one left

    def forget(self, key_id: int) -> None:
        """Drop a key from this process's cache (it was revoked or changed)."""
        self._generation += 1
        for key_hash in [h for h, (_, owner) in self._known.items() if owner.key_id == key_id]:
            del self._known[key_hash]


def authenticate_admin(request: Request, settings: Settings) -> None:
    """The admin API takes ``Authorization: Bearer <GATEWAYZ_ADMIN_TOKEN>``."""
    if settings.admin_token is None:
        raise ServiceUnavailable("The admin API is disabled: set GATEWAYZ_ADMIN_TOKEN")
    token = presented_key(request)
    if not token:
        raise Unauthenticated("Missing admin token: send it as `Authorization: Bearer <token>`")
    if not hmac.compare_digest(token.encode(), settings.admin_token.get_secret_value().encode()):
        raise PermissionDenied("This token does not grant admin access")
