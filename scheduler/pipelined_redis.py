"""A Redis client that pipelines on its own, as ioredis's auto-pipelining
does: the single commands that any number of tasks issue while one pipeline
is in flight go together in the next, one write and one read for all of them.

On this path every socket write is a system call that also runs the
receiver's side of loopback TCP, and it is the largest single cost of a
worker's job: a worker taking, answering and streaming 64 jobs at once
issued a round trip for each command of each. Pipelined, a busy process
sends one pipeline per event-loop turn or so, and an idle one sends each
command at once, as before (it waits for no timer, only for the pipeline
ahead of it).

Only ``execute_command`` changes, which every single command and script
call goes through. Explicit pipelines and transactions, and pub/sub, keep
their own connections as before. Each command's reply or error comes back
to its caller alone; a pipeline that fails as a whole (the connection)
fails each of its commands with that error, which callers translate as
they always did (``scheduler.outages``). Commands go out in the order they
were issued, one pipeline at a time: a command issued after another, by any
task, never runs before it. A command that was issued is sent, even if its
caller stops waiting, as a write already on the wire would be.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as redis

Queued = tuple[tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]


class PipelinedRedis(redis.Redis):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queued: list[Queued] = []
        self._sender: asyncio.Task[None] | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((args, options, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name="redis pipeline")
        return await future

    async def _send(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                async with self.pipeline(transaction=False) as pipe:
                    for args, options, _ in batch:
                        pipe.execute_command(*args, **options)
                    replies: list[Any] = await pipe.execute(raise_on_error=False)
            except Exception as error:  # the connection failed: so did each command, with that error
                replies = [error] * len(batch)
            except asyncio.CancelledError:  # the client is closing
                for _, _, future in [*batch, *self._queued]:
                    future.cancel()
                raise
            for (_, _, future), reply in zip(batch, replies, strict=True):
                if future.done():  # its caller stopped waiting
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        await super().aclose(close_connection_pool)
