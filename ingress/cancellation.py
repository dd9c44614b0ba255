"""Noticing that a client left, and cancelling its job.

Only the ingress sees the client go, so it tells the workers explicitly,
through the result bus (``ResultBus.cancel``): a queued job is then skipped
and a running one stopped (``workers.cancels``). The gateway reads the ASGI
``receive`` channel itself, and has no ``BaseHTTPMiddleware``, which would
hide the ``http.disconnect`` message.

- While a request waits for its job's first (or only) event, the wait races
  the client's disconnect (``unless_gone``). The body has been read by then,
  so the next message can only be the disconnect.
- A streamed answer is a ``RelayStream``: it watches for the disconnect
  whatever the server's ASGI version, closes its event generator when it
  ends (so the subscription is closed then, not whenever the generator is
  collected), and cancels the job when the body was not sent to its end. A
  stream that ends with an error event did end: only an abandoned one is
  cancelled.

Either way the client gets nothing more, and nothing is logged as an error:
a client leaving is nobody's fault.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import TypeVar

from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from scheduler.result_bus import ResultBus
from schema.errors import BusUnavailable
from schema.jobs import Job

log = logging.getLogger(__name__)

T = TypeVar("T")

# A cancellation is kept a little past the job's deadline: a worker that
# takes the job at its very deadline still sees it.
CANCEL_GRACE = 10.0


async def disconnected(receive: Receive) -> None:
    """Returns when the client has gone."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_gone(wait: Awaitable[T], receive: Receive | None) -> T:
    """``wait``'s result, or ``ClientDisconnect`` if the client leaves first.
    ``receive`` is the request's, once its body was read (None: no race).

    ``wait`` runs in the request's own task; one watcher task cancels that
    task if the client leaves (a task per request, where racing two costs
    three and a wait)."""
    if receive is None:
        return await wait
    request = asyncio.current_task()
    assert request is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        await disconnected(receive)
        gone = True
        request.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await wait
    except asyncio.CancelledError:
        # The watcher's cancellation alone becomes the disconnect; any other
        # (the server shutting down) goes on as a cancellation.
        if gone and request.uncancel() == 0:
            raise ClientDisconnect() from None
        raise
    finally:
        watcher.cancel()
        if watcher.done() and not watcher.cancelled():
            watcher.exception()  # a receive that failed: the request was answered or cancelled all the same


async def cancel_job(results: ResultBus, job: Job) -> None:
    """Tell whichever worker holds the job, or will take it, to stop. If the
    bus cannot be reached, the job runs on and is billed as usual."""
    try:
        await results.cancel(job.id, job.deadline - time.time() + CANCEL_GRACE)
    except BusUnavailable as error:
        log.warning("job %s: its client left, but it could not be cancelled (%s); it runs to its end", job.id,
                    error.message)
        return
    log.info("job %s: its client left; cancelled", job.id)


class RelayStream(StreamingResponse):
    """Server-sent events relayed from a job; ``on_abandon`` runs when the
    client leaves before the stream's end."""

    def __init__(self, events: AsyncGenerator[bytes, None], *, on_abandon: Callable[[], Awaitable[None]],
                 headers: Mapping[str, str] | None = None, media_type: str = "text/event-stream") -> None:
        super().__init__(events, headers=headers, media_type=media_type)
        self._events = events
        self._on_abandon = on_abandon

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.ensure_future(self._stream(send))
        gone = asyncio.ensure_future(disconnected(receive))
        try:
            await asyncio.wait((streaming, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streaming, gone):
                task.cancel()
            await asyncio.gather(streaming, gone, return_exceptions=True)
            await self._events.aclose()
            finished = not streaming.cancelled() and streaming.exception() is None and streaming.result()
            if not finished:
                await self._on_abandon()
        if not streaming.cancelled() and (error := streaming.exception()) is not None:
            raise error

    async def _stream(self, send: Send) -> bool:
        """True once the whole body went out; False if the client was gone."""
        try:
            await self.stream_response(send)
        except OSError:  # ASGI 2.4 servers raise on sending to a client that left
            return False
        return True
