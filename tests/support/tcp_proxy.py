"""A TCP proxy on loopback in front of a shared service (RabbitMQ, Redis),
so a test can make that service unreachable for its own clients only: the
shared services on this machine must never go away under other tests.

``pause()`` stops relaying bytes but keeps every connection open, as a
network partition or a frozen server does (the hardest case: reads hang
instead of failing); ``resume()`` relays again. ``cut()`` closes every
connection and refuses new ones, as a stopped server does; ``restore()``
accepts again. It runs on the test's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class TcpProxy:
    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refusing = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._relays: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        await self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def cut(self) -> None:
        self._refusing = True
        for writer in list(self._writers):
            writer.close()
        for relay in list(self._relays):
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    def restore(self) -> None:
        self._refusing = False
        self._flowing.set()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            client_writer.close()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self._target)
        except OSError:
            client_writer.close()
            return
        self._writers |= {client_writer, server_writer}
        relays = {asyncio.create_task(self._relay(client_reader, server_writer)),
                  asyncio.create_task(self._relay(server_reader, client_writer))}
        self._relays.update(relays)
        # One side closing closes the other, as it would without the proxy.
        await asyncio.wait(relays, return_when=asyncio.FIRST_COMPLETED)
        for relay in relays:
            relay.cancel()
        await asyncio.gather(*relays, return_exceptions=True)
        self._relays.difference_update(relays)
        for writer in (client_writer, server_writer):
            self._writers.discard(writer)
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self._flowing.wait()  # paused: the bytes wait here, the connection stays open
            writer.write(data)
            await writer.drain()


@contextlib.asynccontextmanager
async def tcp_proxy(host: str, port: int) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(host, port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
