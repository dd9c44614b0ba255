"""API keys as an operator manages them: their spending limits, expiry,
plan and revocation, and what each has spent in its current periods.

A change locks the key's row first, so it waits for holds in flight on the
key and later holds see it; a key's first limit seeds its spend counters
(``billing.limits.seed``) in the same transaction.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billing import limits
from billing.history import as_utc
from billing.limits import KeyLimits
from schema.errors import KeyNotFound
from schema.tables import api_keys

LIMITS = ("daily_limit", "monthly_limit", "total_limit")  # in KeyLimits' order
CHANGEABLE = frozenset({*LIMITS, "expires_at", "plan"})


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: int
    account_id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: float | None  # unix seconds
    revoked_at: datetime | None
    limits: KeyLimits
    spend: dict[str, int] | None  # per period kind, counted only for a key with limits
    plan: str | None = None  # none: the default plan


async def key_record(engine: AsyncEngine, key_id: int, *, now: float | None = None) -> KeyRecord:
    async with engine.connect() as connection:
        return await _record(connection, key_id, time.time() if now is None else now)


async def change_key(engine: AsyncEngine, key_id: int, values: Mapping[str, int | float | str | None], *,
                     revoke: bool = False, now: float | None = None) -> KeyRecord:
    """Set some of a key's limits, expiry and plan (``None`` clears one), and
    optionally revoke it, for good. The caller checks that a plan exists."""
    unknown = set(values) - CHANGEABLE
    if unknown:
        raise ValueError(f"not changeable: {sorted(unknown)}")
    now = time.time() if now is None else now
    async with engine.begin() as connection:
        row = (await connection.execute(select(api_keys).where(api_keys.c.id == key_id).with_for_update())).first()
        if row is None:
            raise KeyNotFound(f"No API key {key_id}")
        changes: dict[str, object] = dict(values)
        if revoke and row.revoked_at is None:
            changes["revoked_at"] = func.now()
        if changes:
            await connection.execute(update(api_keys).where(api_keys.c.id == key_id).values(changes))
        limited = any((changes[name] if name in changes else getattr(row, name)) is not None for name in LIMITS)
        if limited and not limits.limits_of(row):
            await limits.seed(connection, key_id, row.account_id, now)
        return await _record(connection, key_id, now)


async def _record(connection: AsyncConnection, key_id: int, now: float) -> KeyRecord:
    row = (await connection.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
    if row is None:
        raise KeyNotFound(f"No API key {key_id}")
    key_limits = limits.limits_of(row)
    return KeyRecord(
        id=row.id, account_id=row.account_id, name=row.name, prefix=row.prefix, created_at=as_utc(row.created_at),
        expires_at=row.expires_at, revoked_at=as_utc(row.revoked_at) if row.revoked_at else None, limits=key_limits,
        spend=await limits.spend(connection, key_id, now) if key_limits else None, plan=row.plan,
    )
