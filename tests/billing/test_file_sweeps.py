"""The file store (``scheduler.files``) on both databases, where the API's
tests cannot reach: what the billing sweeper removes (expired files,
uploads abandoned half-way), an upload that fails leaves nothing, a file
deleted while it is read ends the read with an error rather than short."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, insert, select

from billing.balances.memory import MemoryBalances
from billing.consumer import SettlementConsumer
from billing.ledger import Ledger
from billing.snapshots import LedgerSnapshots
from scheduler.files import ABANDONED_AFTER, CHUNK_BYTES, FileStore, new_file_id
from scheduler.queues.memory import MemoryUsageQueue
from schema.errors import FileNotFound, FileTooLarge
from schema.tables import file_chunks, files

HOUR = 3600


async def content(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def chunk_rows(ledger: Ledger) -> int:
    async with ledger.engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(file_chunks))).scalar_one())


async def new_account(ledger: Ledger) -> int:
    return await ledger.create_account("files", 0)


async def test_the_billing_sweeper_removes_expired_files_only(ledger: Ledger) -> None:
    account_id = await new_account(ledger)
    store = FileStore(ledger.engine)
    now = int(time.time())
    expired = await store.save(account_id=account_id, purpose="batch", filename="old.jsonl",
                               content=content(b"x" * (CHUNK_BYTES + 1)), max_bytes=10 * CHUNK_BYTES,
                               expires_at=now - 1)
    kept = await store.save(account_id=account_id, purpose="batch", filename="new.jsonl", content=content(b"{}"),
                            max_bytes=100, expires_at=now + HOUR)
    forever = await store.save(account_id=account_id, purpose="user_data", filename="f", content=content(b"1"),
                               max_bytes=100)
    assert await store.find(account_id, expired.id) is None, "expired is gone before any sweep"
    consumer = asyncio.create_task(SettlementConsumer(ledger, MemoryBalances(LedgerSnapshots(ledger.engine)),
                                                      MemoryUsageQueue(), sweep_interval=0.05).run())
    try:
        for _ in range(200):
            if await chunk_rows(ledger) == 2:
                break
            await asyncio.sleep(0.05)
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
    assert await chunk_rows(ledger) == 2, "the expired file's two chunks are removed, the others' kept"
    files_left, _ = await store.page(account_id, purpose=None, after=None, limit=10, order="asc")
    assert [stored.id for stored in files_left] == [kept.id, forever.id]


async def test_an_upload_abandoned_half_way_is_invisible_then_swept(ledger: Ledger) -> None:
    account_id = await new_account(ledger)
    store = FileStore(ledger.engine)
    started = time.time() - ABANDONED_AFTER - 1
    file_id = new_file_id(started)
    async with ledger.engine.begin() as connection:  # what a process that died mid-upload leaves
        await connection.execute(insert(files).values(id=file_id, account_id=account_id, purpose="batch",
                                                      filename="a", created_at=int(started), complete=False))
        await connection.execute(insert(file_chunks).values(file_id=file_id, seq=0, data=b"partial"))
    assert await store.find(account_id, file_id) is None
    assert await store.page(account_id, purpose=None, after=None, limit=10, order="desc") == ([], False)
    assert await store.remove_expired(now=started + ABANDONED_AFTER - 1) == 0, "it may still be under way"
    assert await store.remove_expired() == 1
    assert await chunk_rows(ledger) == 0


async def test_an_upload_that_fails_leaves_nothing(ledger: Ledger) -> None:
    account_id = await new_account(ledger)
    store = FileStore(ledger.engine)
    with pytest.raises(FileTooLarge):
        await store.save(account_id=account_id, purpose="batch", filename="big", max_bytes=CHUNK_BYTES + 10,
                         content=content(b"a" * CHUNK_BYTES, b"b" * 11))

    async def broken() -> AsyncIterator[bytes]:
        yield b"c" * (2 * CHUNK_BYTES)
        raise ConnectionResetError("the client left")

    with pytest.raises(ConnectionResetError):
        await store.save(account_id=account_id, purpose="batch", filename="cut", max_bytes=10 * CHUNK_BYTES,
                         content=broken())
    async with ledger.engine.connect() as connection:
        assert (await connection.execute(select(func.count()).select_from(files))).scalar_one() == 0
    assert await chunk_rows(ledger) == 0


async def test_a_file_deleted_while_it_is_read_ends_the_read_with_an_error(ledger: Ledger) -> None:
    account_id = await new_account(ledger)
    store = FileStore(ledger.engine)
    stored = await store.save(account_id=account_id, purpose="batch", filename="a", max_bytes=10 * CHUNK_BYTES,
                              content=content(b"a" * CHUNK_BYTES, b"b" * CHUNK_BYTES, b"c"))
    reader = store.read(stored.id)
    assert await anext(reader) == b"a" * CHUNK_BYTES
    assert await store.delete(account_id, stored.id)
    with pytest.raises(FileNotFound):
        await anext(reader)
    assert not await store.delete(account_id, stored.id)
