"""The HTTP server the gateway runs on: uvicorn, with what a connection may
make the server read bounded before the app sees a request.

``EdgeProtocol`` is uvicorn's httptools protocol plus the two limits it
lacks (it would buffer a header of any size and wait for a slow client
forever):

- **Header size.** The request line and header fields together may be at
  most ``GATEWAYZ_MAX_HEADER_BYTES``; past that the client gets 431 and the
  connection is closed. A header block still arriving is cut as soon as the
  bytes read for it pass the limit (give or take one socket read), so an
  endless header is never read, let alone parsed.
- **Read timeout.** A client has ``GATEWAYZ_READ_TIMEOUT`` seconds from the
  first byte of a request to the end of its header block, and may not stay
  silent longer than that within its body; either way it gets 408 (the
  request is answered, then the connection closed). A new connection that
  sends nothing in that time is closed without an answer. Idle keep-alive
  connections keep uvicorn's own keep-alive timeout (also after a request
  answered before its body had arrived, where uvicorn itself loses it), and
  a client is not timed while the server is not reading from it (flow
  control, a pipelined request waiting, ``Expect: 100-continue`` not yet
  answered).

Refusals are in the dialect of the request's path (``ingress.errors``).

``http_config`` builds the one uvicorn ``Config`` every entry point serves
the app with (``gatewayz serve``, ``gatewayz ingress``, the tests' servers).
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ingress.errors import refusal
from schema.errors import GatewayError, HeadersTooLarge, RequestTimeout
from schema.settings import Settings

log = logging.getLogger(__name__)

# Where a connection is in reading a request.
_IDLE = 0  # between requests: the app answers, or uvicorn's keep-alive timeout runs
_WAITING = 1  # owed a request, closed unanswered if none comes: a new connection, or see on_message_complete
_HEADERS = 2
_BODY = 3


class EdgeProtocol(HttpToolsProtocol):
    """Built per server by ``edge_protocol`` (uvicorn makes one per
    connection, with arguments of its own).

    Its overrides run for every request: they call uvicorn's methods
    directly, since ``super()`` would cost as much again as the rest of them,
    and a request read in one go never reads the clock or arms a timer."""

    max_header_bytes: int
    read_timeout: float

    # uvicorn narrows asyncio.Protocol's BaseTransport to Transport, and so does this override.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._reading = _WAITING
        self._refused: GatewayError | None = None
        # Bytes read since the socket read the header block began in, and that
        # read's size (part of it may be the previous request's).
        self._header_bytes = self._first_read = self._read_size = 0
        self._deadline = self.loop.time() + self.read_timeout
        self._timer: asyncio.TimerHandle | None = self.loop.call_at(self._deadline, self._read_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._reading = _IDLE
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused is not None:
            return
        self._read_size = len(data)
        if self._reading == _HEADERS:
            self._header_bytes += self._read_size
        HttpToolsProtocol.data_received(self, data)
        if self._refused is not None:
            # Set by the parser's callbacks during the call above, a side effect mypy cannot see.
            self._refuse(self._refused)  # type: ignore[unreachable]
            return
        reading = self._reading
        if reading == _IDLE:
            if self._timer is not None:
                self._cancel_timer()
            return
        if reading == _BODY or not self._deadline:
            # Silence within a body is timed from its last bytes; a header
            # block from the read it began in (on_message_begin).
            self._deadline = self.loop.time() + self.read_timeout
        if reading == _HEADERS and self._header_bytes - self._first_read > self.max_header_bytes:
            # Every read after the block's first is the block's alone while it lasts.
            self._refuse(self._headers_too_large())
            return
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._read_timed_out)

    # The parser's callbacks, within uvicorn's data_received. Once a request
    # is refused, nothing more that read holds reaches the app.
    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._reading = _HEADERS
        self._header_bytes = self._first_read = self._read_size
        self._deadline = 0.0  # set when the read ends, if the block has not

    def on_headers_complete(self) -> None:
        if self._refused is not None:
            return
        # Counting bytes read is an upper bound; only past the limit is the block measured.
        if self._header_bytes > self.max_header_bytes and self._header_block_size() > self.max_header_bytes:
            self._refused = self._headers_too_large()
            return
        self._reading = _BODY
        HttpToolsProtocol.on_headers_complete(self)

    def on_body(self, body: bytes) -> None:
        if self._refused is None:
            HttpToolsProtocol.on_body(self, body)

    def on_message_complete(self) -> None:
        if self._refused is not None:
            return
        HttpToolsProtocol.on_message_complete(self)
        if self.cycle.response_complete:
            # Answered before its body was read: uvicorn's keep-alive timeout,
            # armed with the answer, was cancelled by the body's bytes since.
            self._reading = _WAITING
            self._deadline = self.loop.time() + self.timeout_keep_alive
        else:
            self._reading = _IDLE

    def _header_block_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _headers_too_large(self) -> HeadersTooLarge:
        return HeadersTooLarge(f"The request line and header fields are larger than {self.max_header_bytes} bytes, "
                               f"the most this gateway reads")

    def _read_timed_out(self) -> None:
        self._timer = None
        reading = self._reading
        if reading == _IDLE or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused or (reading == _BODY and self.cycle.waiting_for_100_continue):
            self._deadline = now + self.read_timeout  # the server is not reading: the client is not late
        if now < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._read_timed_out)
            return
        if reading == _WAITING:
            log.debug("closing a connection that sent no request in time")
            self._reading = _IDLE
            self.transport.close()
            return
        part = "header fields" if reading == _HEADERS else "body"
        error = RequestTimeout(f"No more of the request's {part} arrived for {self.read_timeout:g} s; "
                               f"the gateway stopped waiting for it")
        self._refuse(error, in_body=reading == _BODY)

    def _refuse(self, error: GatewayError, *, in_body: bool = False) -> None:
        """Answer ``error`` in the dialect of the request's path and close the
        connection; only close it when an answer is already under way on it
        (this request's, or, pipelined, the previous one's)."""
        log.debug("refused a request from %s: %d %s", self.client, error.status, error.message)
        self._reading = _IDLE
        self._refused = error
        self._cancel_timer()
        cycle = self.cycle  # the request's own when refusing its body, else the previous request's
        if cycle is not None and (cycle.response_started if in_body else not cycle.response_complete):
            self.transport.close()
            return
        if in_body:
            # The app waiting for the rest of the body sees the client gone; its answer goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        headers, body = refusal(path, error)
        status = f"HTTP/1.1 {error.status} {http.HTTPStatus(error.status).phrase}\r\n".encode()
        fields = [*self.server_state.default_headers, *headers]
        self.transport.write(status + b"".join(name + b": " + value + b"\r\n" for name, value in fields)
                             + b"\r\n" + body)
        self.transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def edge_protocol(settings: Settings) -> type[EdgeProtocol]:
    """``EdgeProtocol`` with the limits of ``settings``."""
    return type("EdgeProtocol", (EdgeProtocol,), {
        "max_header_bytes": settings.max_header_bytes, "read_timeout": settings.read_timeout})


def http_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    """The uvicorn ``Config`` serving ``app``; ``options`` are uvicorn's own
    (host and port, log level, graceful shutdown timeout …)."""
    return uvicorn.Config(app, http=edge_protocol(settings), ws="none", loop="uvloop", lifespan="on",
                          access_log=False, **options)
