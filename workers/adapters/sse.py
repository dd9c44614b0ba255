"""Server-sent events decoded from an upstream body, read by read.

The network cuts a body where it likes: one read may hold half a line, or
the end of one event and three more. ``SSEDecoder.feed`` takes each read as
it comes and returns the events it completed, as ``(event, data)`` with the
data lines joined by ``\\n`` and left as bytes (``orjson`` parses bytes, so
an event's text is never decoded twice). Lines end in ``\\n``, ``\\r\\n`` or
``\\r`` (Google frames with ``\\r\\n``); a read ending in ``\\r`` keeps that
line until the next read says whether a ``\\n`` follows. Comments, ``id``
and ``retry`` are skipped: the gateway never reconnects a stream.

The work is per line, in C where it can be (``bytes.splitlines``,
``partition``): an OpenAI chunk costs two lines, whatever the reads.
"""

from __future__ import annotations

BOM = b"\xef\xbb\xbf"

Event = tuple[str | None, bytes]


class SSEDecoder:
    __slots__ = ("_data", "_event", "_pending", "_started")

    def __init__(self) -> None:
        self._pending = b""  # a line not yet ended
        self._event: str | None = None
        self._data: list[bytes] = []
        self._started = False

    def feed(self, chunk: bytes) -> list[Event]:
        """The events ``chunk`` completed, in order."""
        if self._pending:
            chunk = self._pending + chunk
        if not self._started:
            if BOM.startswith(chunk):  # nothing yet, or part of a byte order mark: wait for more
                self._pending = chunk
                return []
            self._started = True
            chunk = chunk.removeprefix(BOM)
        lines = chunk.splitlines(keepends=True)
        # The last line is whole only if it ends in \n: a \r may be half of \r\n.
        self._pending = b"" if chunk.endswith(b"\n") else lines.pop() if lines else b""
        events: list[Event] = []
        for line in lines:
            self._line(line.rstrip(b"\r\n"), events)
        return events

    def finish(self) -> list[Event]:
        """At the end of the body: the last line, and an event it left
        without its blank line (some providers end so; it is sent, not lost)."""
        events: list[Event] = []
        if not self._started:
            self._pending = b""  # the body held at most a byte order mark
        if self._pending:
            self._line(self._pending.rstrip(b"\r\n"), events)
            self._pending = b""
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[Event]) -> None:
        if not line:
            if self._data:
                events.append((self._event, b"\n".join(self._data) if len(self._data) > 1 else self._data[0]))
                self._data = []
            self._event = None
            return
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value.decode(errors="replace")
