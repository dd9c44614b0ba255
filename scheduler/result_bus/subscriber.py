"""One Redis pub/sub subscription, read lean: the ingress's result channel.

An ingress process relays every event of every stream it holds through one
subscription: at ten thousand open streams that is ten thousand messages a
second. redis-py's ``PubSub.get_message`` costs tens of microseconds a
message (a timeout, its retry wrapper and its parser's layers around each
one), and a reader slower than the publishers lets Redis queue the rest
until its output buffer limit closes the subscription. This reader owns its
connection: it reads whatever has arrived in one call, lets hiredis parse
every whole message in it, and hands each one on, with nothing per message
but the parse and the call.

It speaks RESP2 on a connection of its own to the server the given client
uses (host or Unix socket, user and password, TLS, client name), so the
subscription never shares a connection with commands. It does not
reconnect: a lost connection raises ``ConnectionError`` from ``read``, and
the owner decides what a gap means and subscribes again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import hiredis
import redis.asyncio as redis

from scheduler.connections import redis_socket

READ_SIZE = 1 << 16  # bytes read at once: hundreds of events
CONNECT_TIMEOUT = 5.0  # seconds to connect, authenticate and subscribe


class Subscriber:
    """A connection subscribed to one channel; ``read`` passes each message's
    payload to ``deliver`` until the connection is lost."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, channel: str) -> None:
        self._reader = reader
        self._writer = writer
        self._channel = channel.encode()
        self._parser = hiredis.Reader()

    @classmethod
    async def open(cls, client: redis.Redis, channel: str) -> Subscriber:
        """Subscribed to ``channel`` on ``client``'s server, confirmed."""
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await redis_socket(client, limit=READ_SIZE)
            subscriber = cls(reader, writer, channel)
            try:
                await subscriber._start(client.connection_pool.connection_kwargs)
            except BaseException:
                subscriber.close()
                raise
        return subscriber

    async def _start(self, options: dict[str, Any]) -> None:
        if options.get("password") is not None:
            user = [options["username"]] if options.get("username") else []
            await self._ask("AUTH", *user, options["password"])
        if options.get("client_name"):
            await self._ask("CLIENT", "SETNAME", options["client_name"])
        confirmation = await self._ask("SUBSCRIBE", self._channel)
        if not (isinstance(confirmation, list) and confirmation[:2] == [b"subscribe", self._channel]):
            raise ConnectionError(f"unexpected answer to SUBSCRIBE: {confirmation!r}")

    async def _ask(self, *words: str | bytes) -> object:
        self._writer.write(_command(words))
        while (reply := self._parser.gets()) is False:
            data = await self._reader.read(READ_SIZE)
            if not data:
                raise ConnectionError("Redis closed the connection")
            self._parser.feed(data)
        if isinstance(reply, hiredis.ReplyError):
            raise ConnectionError(f"Redis refused {words[0]!r}: {reply}")
        return reply

    async def read(self, deliver: Callable[[bytes], None]) -> None:
        """Deliver every message until the connection is lost, which raises
        ``ConnectionError``; a second subscription confirmation (never sent
        by this reader) is one too."""
        parser, reader = self._parser, self._reader
        while True:
            while (reply := parser.gets()) is not False:
                if type(reply) is list and reply[0] == b"message":
                    deliver(reply[2])
                else:  # a second confirmation, an error: not the subscription this reader made
                    raise ConnectionError(f"unexpected reply on the subscription: {reply!r}"[:200])
            data = await reader.read(READ_SIZE)
            if not data:
                raise ConnectionError("Redis closed the subscription")
            parser.feed(data)

    def close(self) -> None:
        self._writer.close()


def _command(words: tuple[str | bytes, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        data = word.encode() if isinstance(word, str) else word
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)
