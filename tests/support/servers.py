"""Real HTTP servers on loopback for tests: uvicorn in a thread, on a socket
bound before the thread starts (no port races)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import uvicorn
from uvicorn._compat import asyncio_run

from ingress.server import http_config
from schema.settings import Settings

T = TypeVar("T")


class ServerThread:
    """``settings`` serves a gateway as ``gatewayz serve`` does (its edge
    limits included); without, a plain uvicorn serves a fake upstream.
    ``options`` are uvicorn's own."""

    def __init__(self, app: Any, *, name: str, settings: Settings | None = None, **options: Any) -> None:
        self.app = app
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        options = {"log_level": "warning", "timeout_graceful_shutdown": 2, **options}
        if settings is not None:
            config = http_config(app, settings, **options)
        else:
            config = uvicorn.Config(app, lifespan="on", access_log=False, **options)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            await self._server.serve(sockets=[self._socket])

        asyncio_run(serve(), loop_factory=self._server.config.get_loop_factory())

    def call(self, work: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``work`` on the server's event loop (the app's own objects live there) and wait for it."""
        assert self._loop is not None, "the server is not running"
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self._thread.name} did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._socket.close()


F = TypeVar("F")


@contextmanager
def serving(fake: F, name: str) -> Iterator[F]:
    """Serve a fake's ``app`` on loopback while the block runs, with its address in ``fake.url``."""
    with ServerThread(fake.app, name=name) as server:  # type: ignore[attr-defined]
        fake.url = server.url  # type: ignore[attr-defined]
        yield fake
