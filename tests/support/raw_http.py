"""HTTP/1.1 by hand over a socket, for what no client library sends: a
request that stops halfway, headers without their body, an endless header.
Every read waits at most ``TIMEOUT`` seconds: a server that never answers
fails the test instead of hanging it."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

TIMEOUT = 10.0


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: gateway", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_response(raw: socket.socket) -> RawResponse | None:
    """The next response on ``raw`` (its body by ``content-length``), or
    ``None`` when the server closed the connection without one."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = _recv(raw, 1)  # no further: a pipelined response may follow
        if not byte:
            assert not head, f"the connection closed within a response's head: {head!r}"
            return None
        head += byte
    status_line, *fields = head[:-4].decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (field.split(":", 1) for field in fields)}
    body = b""
    while len(body) < int(headers.get("content-length", "0")):
        chunk = _recv(raw, int(headers["content-length"]) - len(body))
        assert chunk, "the connection closed within a response's body"
        body += chunk
    return RawResponse(int(status_line.split(" ")[1]), headers, body)


def closed_by_server(raw: socket.socket) -> bool:
    """Whether the server closed the connection (reading gives end of file or a reset)."""
    return _recv(raw, 65536) == b""


def _recv(raw: socket.socket, size: int) -> bytes:
    try:
        return raw.recv(size)
    except ConnectionResetError:
        # Closing with bytes of ours unread makes the server's kernel reset
        # the connection: what it sent before is read first.
        return b""
