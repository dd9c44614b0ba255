"""What a request body may be, checked before any route reads it: at most
``GATEWAYZ_MAX_BODY_BYTES`` (413), and JSON (415), the only bodies the API
takes but uploads (below).

Pure ASGI middleware around the whole app, so every route goes through it
(FastAPI's and plain Starlette handlers alike) and none loses sight of
``http.disconnect``. A body announced larger than the limit
(``Content-Length``) is refused before a byte of it is read. A chunked one
(no length announced) is read here as it arrives, and refused as soon as it
passes the limit; within it, it is handed to the route as read. Either way
no body over the limit is ever held whole. A refusal closes the connection,
so the rest is never read (``ingress.errors.refusal``).

A request with a ``Content-Length`` within the limit costs one look at its
headers; its route reads its body as before.

Upload paths (``uploads``: ``POST /v1/files``) take ``multipart/form-data``
instead, up to a limit of their own, and their body is never held here: a
chunked one is counted as the route reads it, and the read that passes the
limit raises ``RequestTooLarge``, which the route answers as any error.

``Content-Type`` must be ``application/json`` (any parameters, any case) or
an ``application/…+json`` type, or be missing or empty (a client that sends none, such as httpx given
bytes, means JSON). curl's ``-d`` alone sends
``application/x-www-form-urlencoded``: the 415 says which header to send.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingress.errors import refusal
from schema.errors import GatewayError, RequestTooLarge, UnsupportedMediaType


class BodyLimits:
    """``uploads`` maps each upload path to the largest body it takes."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, uploads: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.uploads = dict(uploads or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = media_type = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"content-type":
                media_type = value
            elif name == b"transfer-encoding":
                chunked = True  # the server accepts only chunked as the last coding
        # The server has checked the framing: a length is digits, a chunked body has none.
        size = int(length) if length is not None else None
        if size == 0 or size is None and not chunked:
            await self.app(scope, receive, send)  # no body
            return
        upload_limit = self.uploads.get(scope["path"])
        if upload_limit is not None:
            await self._upload(scope, receive, send, size, media_type, upload_limit)
            return
        if size is not None and size > self.max_body_bytes:
            await _refuse(scope, send, RequestTooLarge(
                f"The request body ({size} bytes) is larger than {self.max_body_bytes} bytes, "
                f"the most this gateway reads"))
            return
        if media_type and not is_json(media_type):  # an empty type says no more than none
            await _refuse(scope, send, UnsupportedMediaType(
                f"The request body must be JSON, sent with Content-Type: application/json "
                f"(curl: -H 'Content-Type: application/json', or --json); got {media_type.decode('latin-1')!r}"))
            return
        if size is None:
            replay = await self._read_chunked(scope, receive, send)
            if replay is None:
                return
            receive = replay
        await self.app(scope, receive, send)

    async def _upload(self, scope: Scope, receive: Receive, send: Send, size: int | None,
                      media_type: bytes | None, limit: int) -> None:
        if size is not None and size > limit:
            await _refuse(scope, send, RequestTooLarge(
                f"The upload ({size} bytes) is larger than {limit} bytes, the most this gateway takes"))
            return
        if media_type is None or media_type.split(b";", 1)[0].strip().lower() != b"multipart/form-data":
            await _refuse(scope, send, UnsupportedMediaType(
                "An upload must be multipart/form-data (curl: -F file=@FILE -F purpose=batch); got "
                f"{(media_type or b'none').decode('latin-1')!r}"))
            return
        if size is None:
            receive = _counted(receive, limit)
        await self.app(scope, receive, send)

    async def _read_chunked(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """The body, read up to the limit, as a ``receive`` that hands it to
        the route; ``None`` once the body was refused or the client left."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client left (or the server timed it out): nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _refuse(scope, send, RequestTooLarge(
                    f"The request body is larger than {self.max_body_bytes} bytes, the most this gateway reads"))
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal body
            if body is None:
                return await receive()  # the body is read: what follows is the disconnect
            message, body = body, None
            return message

        return replay


def _counted(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises ``RequestTooLarge`` on the read that passes ``limit``."""
    size = 0

    async def counted() -> Message:
        nonlocal size
        message = await receive()
        size += len(message.get("body", b""))
        if size > limit:
            raise RequestTooLarge(f"The upload is larger than {limit} bytes, the most this gateway takes")
        return message

    return counted


def is_json(media_type: bytes) -> bool:
    """``application/json`` or ``application/<anything>+json``, with any
    parameters (``charset=utf-8``), in any case."""
    if media_type == b"application/json":
        return True  # what the SDKs send
    essence = media_type.split(b";", 1)[0].strip().lower()
    return essence == b"application/json" or (essence.startswith(b"application/") and essence.endswith(b"+json"))


async def _refuse(scope: Scope, send: Send, error: GatewayError) -> None:
    headers, body = refusal(scope["path"], error)
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
