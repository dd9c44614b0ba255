"""The file store: files of an account (the OpenAI Files API; batch input
and output) kept in the database in chunks, so that every ingress and
batch process reads the same files, and none holds a whole file in memory.

A file is written chunk by chunk, each chunk in a short transaction of its
own (a slow upload never holds SQLite's one writer, nor a PostgreSQL
connection, for long), and becomes visible only once its last chunk is in
(``files.complete``). An upload that fails is removed at once; one whose
process died is removed by ``remove_expired`` after ``ABANDONED_AFTER``.
An expired file is invisible from its expiry on, and removed by the same
sweep (the billing role's sweeper).

Reading goes a chunk at a time, each in its own statement, so a slow
client's download holds no connection between chunks.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from schema.errors import FileNotFound, FileTooLarge
from schema.tables import file_chunks, files

CHUNK_BYTES = 1024 * 1024
# An upload still incomplete this long after it began was abandoned by a
# process that died mid-way (a live one removes its own on failure).
ABANDONED_AFTER = 6 * 3600


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: str
    account_id: int
    purpose: str
    filename: str
    bytes: int
    created_at: int  # unix seconds
    expires_at: int | None

    def openai_object(self) -> dict[str, Any]:
        """The file as OpenAI's API shows it (its ``FileObject``)."""
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "expires_at": self.expires_at, "filename": self.filename, "purpose": self.purpose,
                "status": "processed", "status_details": None}


def new_file_id(now: float) -> str:
    """``file-`` and 24 hex digits, the first 12 the creation time in
    milliseconds: ids sort as files were created, so a page can start after
    a file even once it is deleted."""
    return f"file-{int(now * 1000):012x}{secrets.token_hex(6)}"


class FileStore:
    """``clock`` (unix seconds) decides what has expired; tests move it."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self.clock = clock

    async def save(self, *, account_id: int, purpose: str, filename: str, content: AsyncIterable[bytes],
                   max_bytes: int, expires_at: int | None = None) -> StoredFile:
        """Store ``content`` as a new file of the account; ``FileTooLarge`` once
        it passes ``max_bytes`` (nothing of it is kept)."""
        now = self.clock()
        file_id = new_file_id(now)
        async with self._engine.begin() as connection:
            await connection.execute(insert(files).values(
                id=file_id, account_id=account_id, purpose=purpose, filename=filename, created_at=int(now),
                expires_at=expires_at, complete=False))
        try:
            size, chunks = await self._write(file_id, content, max_bytes)
        except BaseException:
            # Cancelled or failed: nothing of the file may stay (shielded, or a
            # cancellation would cut the clean-up short).
            await asyncio.shield(self._remove([file_id]))
            raise
        async with self._engine.begin() as connection:
            await connection.execute(update(files).where(files.c.id == file_id).values(
                bytes=size, chunks=chunks, complete=True))
        return StoredFile(file_id, account_id, purpose, filename, size, int(now), expires_at)

    async def _write(self, file_id: str, content: AsyncIterable[bytes], max_bytes: int) -> tuple[int, int]:
        """Write ``content`` in chunks of ``CHUNK_BYTES``; its size and chunk count."""
        size = seq = 0
        pending = bytearray()
        async for piece in content:
            size += len(piece)
            if size > max_bytes:
                raise FileTooLarge(f"The file is larger than {max_bytes} bytes, the most allowed for its purpose")
            pending += piece
            while len(pending) >= CHUNK_BYTES:
                await self._write_chunk(file_id, seq, bytes(pending[:CHUNK_BYTES]))
                del pending[:CHUNK_BYTES]
                seq += 1
        if pending or seq == 0:
            await self._write_chunk(file_id, seq, bytes(pending))  # an empty file has one empty chunk
            seq += 1
        return size, seq

    async def _write_chunk(self, file_id: str, seq: int, data: bytes) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(insert(file_chunks).values(file_id=file_id, seq=seq, data=data))

    async def find(self, account_id: int, file_id: str) -> StoredFile | None:
        """The account's file; ``None`` if absent, deleted, expired or another account's."""
        async with self._engine.connect() as connection:
            row = (await connection.execute(
                select(files).where(files.c.id == file_id, files.c.account_id == account_id, self._visible())
            )).first()
        return _stored(row) if row is not None else None

    async def page(self, account_id: int, *, purpose: str | None, after: str | None, limit: int,
                   order: Literal["asc", "desc"]) -> tuple[list[StoredFile], bool]:
        """Up to ``limit`` of the account's files in creation order, starting
        after the file ``after`` (which need not exist any more); and whether
        more follow."""
        query = select(files).where(files.c.account_id == account_id, self._visible())
        if purpose is not None:
            query = query.where(files.c.purpose == purpose)
        if after is not None:
            query = query.where(files.c.id > after if order == "asc" else files.c.id < after)
        query = query.order_by(files.c.id.asc() if order == "asc" else files.c.id.desc()).limit(limit + 1)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_stored(row) for row in rows[:limit]], len(rows) > limit

    async def delete(self, account_id: int, file_id: str) -> bool:
        """Delete the account's file; ``False`` if it had none by that id."""
        if await self.find(account_id, file_id) is None:
            return False
        return await self._remove([file_id]) > 0

    async def read(self, file_id: str) -> AsyncIterator[bytes]:
        """The file's content, chunk by chunk, in order. Whose file it is was
        checked by ``find``; ``FileNotFound`` if it goes meanwhile, rather
        than a short file that looks whole."""
        async with self._engine.connect() as connection:
            count = (await connection.execute(
                select(files.c.chunks).where(files.c.id == file_id, files.c.complete.is_(True)))).scalar()
        if count is None:
            raise FileNotFound(f"No such File object: {file_id}", param="file_id")
        for seq in range(count):
            async with self._engine.connect() as connection:
                data = (await connection.execute(select(file_chunks.c.data).where(
                    file_chunks.c.file_id == file_id, file_chunks.c.seq == seq))).scalar()
            if data is None:
                raise FileNotFound(f"File {file_id} was deleted while it was read", param="file_id")
            yield data

    async def remove_expired(self, now: float | None = None) -> int:
        """Remove files past their expiry, and uploads abandoned half-way; how many."""
        now = self.clock() if now is None else now
        async with self._engine.connect() as connection:
            gone = list((await connection.execute(select(files.c.id).where(or_(
                files.c.expires_at <= now,
                and_(files.c.complete.is_(False), files.c.created_at <= now - ABANDONED_AFTER)))
            )).scalars())
        return await self._remove(gone)

    async def _remove(self, file_ids: list[str]) -> int:
        if not file_ids:
            return 0
        async with self._engine.begin() as connection:
            await connection.execute(delete(file_chunks).where(file_chunks.c.file_id.in_(file_ids)))
            result = await connection.execute(delete(files).where(files.c.id.in_(file_ids)))
        return result.rowcount

    def _visible(self) -> Any:
        now = self.clock()
        return and_(files.c.complete.is_(True), or_(files.c.expires_at.is_(None), files.c.expires_at > now))


def _stored(row: Any) -> StoredFile:
    return StoredFile(row.id, row.account_id, row.purpose, row.filename, row.bytes, row.created_at, row.expires_at)
