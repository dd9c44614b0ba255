"""Key lookups on a real, migrated SQLite ledger: a burst of requests with a
key the cache lacks costs one statement, and a lookup that finds no free
connection in the pool is a 503 (retry shortly), never a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.requests import Request

from billing.ledger import Ledger
from ingress.auth import Authenticator, hash_key, new_key
from schema.errors import ServiceUnavailable, Unauthenticated
from schema.settings import Settings
from tests.support.databases import SqliteTemplate

SECRET = b"test-secret"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplate:
    return SqliteTemplate(tmp_path_factory.mktemp("auth-ledgers"))


@pytest.fixture
def settings(template: SqliteTemplate) -> Iterator[Settings]:
    with template.fresh() as settings:
        yield settings


def presenting(key: str) -> Request:
    return Request({"type": "http", "headers": [(b"authorization", f"Bearer {key}".encode())]})


async def key_on_new_account(ledger: Ledger) -> tuple[str, int]:
    key = new_key()
    account_id = await ledger.create_account("auth", 1_000_000)
    return key, await ledger.create_key(account_id, "k", hash_key(SECRET, key), key[:8])


async def test_a_burst_of_requests_with_an_uncached_key_looks_it_up_once(settings: Settings) -> None:
    engine = create_async_engine(settings.sqlalchemy_url, pool_size=1, max_overflow=0)
    ledger = Ledger(engine)
    try:
        key, key_id = await key_on_new_account(ledger)
        lookups: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if "FROM api_keys" in statement:
                lookups.append(statement)

        event.listen(engine.sync_engine, "before_cursor_execute", count)
        authenticate = Authenticator(ledger, SECRET)
        owners = await asyncio.gather(*(authenticate(presenting(key)) for _ in range(50)))
        assert {owner.key_id for owner in owners} == {key_id}
        assert len(lookups) == 1
        await authenticate(presenting(key))  # cached now
        assert len(lookups) == 1

        unknown = new_key()
        refusals = await asyncio.gather(*(authenticate(presenting(unknown)) for _ in range(10)),
                                        return_exceptions=True)
        assert all(isinstance(refusal, Unauthenticated) for refusal in refusals)
        assert len(lookups) == 2  # one more, shared; and an unknown key is not cached
        with pytest.raises(Unauthenticated):
            await authenticate(presenting(unknown))
        assert len(lookups) == 3
    finally:
        await engine.dispose()


async def test_a_lookup_that_finds_the_pool_busy_is_a_503_with_retry_after(settings: Settings) -> None:
    engine = create_async_engine(settings.sqlalchemy_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    ledger = Ledger(engine)
    try:
        key, key_id = await key_on_new_account(ledger)
        authenticate = Authenticator(ledger, SECRET)
        async with engine.connect():  # the pool's only connection, busy
            refusals = await asyncio.gather(*(authenticate(presenting(key)) for _ in range(3)),
                                            return_exceptions=True)
        for refusal in refusals:
            assert isinstance(refusal, ServiceUnavailable)
            assert refusal.status == 503 and refusal.headers() == {"retry-after": "1"}
        assert (await authenticate(presenting(key))).key_id == key_id  # the pool free again: served
    finally:
        await engine.dispose()


async def test_forgetting_a_key_during_its_lookup_keeps_the_answer_out_of_the_cache(settings: Settings) -> None:
    engine = create_async_engine(settings.sqlalchemy_url, pool_size=1, max_overflow=0)
    ledger = Ledger(engine)
    try:
        key, key_id = await key_on_new_account(ledger)
        authenticate = Authenticator(ledger, SECRET)
        lookups: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if "FROM api_keys" in statement:
                lookups.append(statement)

        event.listen(engine.sync_engine, "before_cursor_execute", count)
        answering = asyncio.ensure_future(authenticate(presenting(key)))
        await asyncio.sleep(0)  # its lookup has begun
        authenticate.forget(key_id)  # revoked meanwhile, by the admin API
        assert (await answering).key_id == key_id
        await authenticate(presenting(key))
        assert len(lookups) == 2  # looked up again: the answer begun before was not kept
    finally:
        await engine.dispose()
