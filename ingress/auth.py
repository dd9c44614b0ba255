"""API keys: generated once, stored only as an HMAC-SHA256 hash; and the
operator's admin token."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from fastapi import Request

from billing.ledger import KeyOwner, Ledger
from schema.errors import PermissionDenied, ServiceUnavailable, Unauthenticated
from schema.settings import Settings

KEY_PREFIX = "gz-"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(secret: bytes, key: str) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


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


async def authenticate(request: Request, ledger: Ledger, secret: bytes) -> KeyOwner:
    key = presented_key(request)
    if not key:
        raise Unauthenticated("Missing API key: send it as `Authorization: Bearer <key>`")
    owner = await ledger.key_owner(hash_key(secret, key))
    if owner is None:
        raise Unauthenticated("Incorrect API key provided")
    return owner


def authenticate_admin(request: Request, settings: Settings) -> None:
    """The admin API takes ``Authorization: Bearer <GATEWAYZ_ADMIN_TOKEN>``."""
    if settings.admin_token is None:
        raise ServiceUnavailable("The admin API is disabled: set GATEWAYZ_ADMIN_TOKEN")
    token = presented_key(request)
    if not token:
        raise Unauthenticated("Missing admin token: send it as `Authorization: Bearer <token>`")
    if not hmac.compare_digest(token.encode(), settings.admin_token.get_secret_value().encode()):
        raise PermissionDenied("This token does not grant admin access")
