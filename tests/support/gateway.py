"""A whole gateway for a test: the app with every role in one process,
embedded or against the real services, plus keys and balances."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import select

from billing.ledger import Discrepancy, Ledger
from billing.limits import KeyLimits
from ingress.app import create_app
from ingress.auth import hash_key, new_key
from ingress.runtime import Runtime, embedded_roles
from schema.catalog import GatewayConfig
from schema.database import create_engine
from schema.money import credits_to_micros
from schema.settings import Settings
from schema.tables import api_keys
from tests.support.servers import ServerThread
from tests.support.services import distributed_services

KEY_SECRET = "test-key-secret"
ADMIN_TOKEN = "test-admin-token"
STRIPE_WEBHOOK_SECRET = "whsec_test_secret"


@dataclass
class Gateway:
    settings: Settings
    config: GatewayConfig
    server: ServerThread

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/v1"

    def create_key(self, credits: str | Decimal = "10", *, limits: KeyLimits = KeyLimits(),
                   expires_at: float | None = None, account_id: int | None = None, plan: str | None = None) -> str:
        """A key on a new account granted ``credits``, or on ``account_id``."""
        return asyncio.run(_create_key(self.settings, credits_to_micros(Decimal(credits)), limits=limits,
                                       expires_at=expires_at, account_id=account_id, plan=plan))

    def key_id(self, key: str) -> int:
        response = httpx.get(f"{self.url}/user/balance", headers={"authorization": f"Bearer {key}"})
        response.raise_for_status()
        return response.json()["key_id"]

    def balance(self, key: str) -> int:
        """Available micro-credits: what is left once open holds are set aside."""
        response = httpx.get(f"{self.url}/user/balance", headers={"authorization": f"Bearer {key}"})
        response.raise_for_status()
        return response.json()["available_micros"]

    def held(self, key: str) -> int:
        response = httpx.get(f"{self.url}/user/balance", headers={"authorization": f"Bearer {key}"})
        return response.json()["held_micros"]

    def wait_until_settled(self, key: str, timeout: float = 10.0) -> int:
        """Poll until no hold is open (every admitted job settled); the held amount then."""
        deadline = time.monotonic() + timeout
        while (held := self.held(key)) and time.monotonic() < deadline:
            time.sleep(0.02)
        return held

    def account_id(self, key: str) -> int:
        response = httpx.get(f"{self.url}/user/balance", headers={"authorization": f"Bearer {key}"})
        response.raise_for_status()
        return response.json()["account_id"]

    def reconcile(self, *keys: str) -> list[Discrepancy]:
        """What ``Ledger.reconcile`` finds wrong with the accounts of
        ``keys`` and their keys' spend counters, not the rest of the
        gateway's database, which the session's other tests write."""
        if not keys:
            raise TypeError("reconcile() needs the keys whose accounts the test made")
        return asyncio.run(_reconcile(self.settings, [hash_key(KEY_SECRET.encode(), key) for key in keys]))

    def expire_grants(self, now: float) -> int:
        """What the billing sweeper does, at a chosen moment: by the gateway's
        own ledger, so its balances follow."""
        return self.server.call(self.server.app.state.runtime.ledger.expire_grants(now))

    def wait_for_balance(self, key: str, expected: int, timeout: float = 10.0) -> int:
        """Settlement is asynchronous: poll until the balance is ``expected``
        or ``timeout`` passes, then return what it is."""
        deadline = time.monotonic() + timeout
        current = self.balance(key)
        while current != expected and time.monotonic() < deadline:
            time.sleep(0.02)
            current = self.balance(key)
        return current


async def _create_key(settings: Settings, grant: int, *, limits: KeyLimits, expires_at: float | None,
                      account_id: int | None, plan: str | None = None) -> str:
    engine = create_engine(settings)
    try:
        ledger = Ledger(engine)
        if account_id is None:
            account_id = await ledger.create_account("test", grant)  # type: ignore[arg-type]
        key = new_key()
        await ledger.create_key(account_id, "test", hash_key(KEY_SECRET.encode(), key), key[:8], limits=limits,
                                expires_at=expires_at, plan=plan)
        return key
    finally:
        await engine.dispose()


async def _reconcile(settings: Settings, key_hashes: list[str]) -> list[Discrepancy]:
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            accounts = select(api_keys.c.account_id).where(api_keys.c.key_hash.in_(key_hashes))
            keys = (await connection.execute(
                select(api_keys.c.id).where(api_keys.c.account_id.in_(accounts)))).scalars()
            mine = {f"key {key_id} total spend" for key_id in keys}
            account_ids = set((await connection.execute(accounts)).scalars())
        # A transaction that does not balance (account 0) cannot be written
        # through the ledger at all (``_record`` refuses it): always reported.
        return [found for found in await Ledger(engine).reconcile()
                if found.account_id in account_ids or found.what in mine
                or (found.account_id == 0 and found.what.startswith("transaction "))]
    finally:
        await engine.dispose()


Roles = Callable[[Runtime], None]


@contextmanager
def gateway_in_mode(mode: str, config: GatewayConfig, data_dir: Path, *, roles: Roles = embedded_roles,
                    **overrides: object) -> Iterator[Gateway]:
    """``embedded``, or ``distributed`` on a fresh database and namespace.
    ``roles`` are the pools and billing the gateway runs beside its API."""
    if mode == "embedded":
        with running_gateway(config, data_dir, roles=roles, **overrides) as gateway:
            yield gateway
        return
    with (distributed_services(list(config.providers)) as services,
          running_gateway(config, data_dir, services.environ(), roles=roles, **overrides) as gateway):
        yield gateway


@contextmanager
def running_gateway(
    config: GatewayConfig, data_dir: Path, environ: Mapping[str, str] | None = None, *,
    roles: Roles = embedded_roles, **overrides: object
) -> Iterator[Gateway]:
    # Explicit Nones: a GATEWAYZ_* variable in the test's environment must not
    # switch an embedded gateway to real services.
    values = {"data_dir": data_dir, "key_secret": KEY_SECRET, "broker_url": None, "redis_url": None,
              "database_url": None, **overrides}
    for name, value in (environ or {}).items():
        values[name.removeprefix("GATEWAYZ_").lower()] = value
    settings = Settings.model_validate(values)
    app = create_app(settings, config, roles=roles, apply_migrations=True)
    with ServerThread(app, name="gateway", settings=settings) as server:
        yield Gateway(settings, config, server)
