"""Several ingress processes on one port: ``gatewayz ingress --workers N``.

Python runs one core per process, so an ingress host with more cores runs
more processes. Each is a whole ingress: its own event loop, and its own
lifespan, so its own runtime (broker connection, result subscription, key
cache); they share only what every ingress shares anyway, through Redis,
RabbitMQ and the database.

Each process listens on its own socket bound to the same address with
``SO_REUSEPORT``: the kernel spreads new connections evenly over the
processes that are listening. (On one shared listening socket, whichever
process wakes first takes a burst of connections, and a keep-alive client
stays where it landed.) A process starts listening only once its lifespan
has started, so a connection never waits on one still starting.

The first process is only a supervisor. It binds the address first, so a
port in use is a clear error before anything starts, then forks the
processes (the app is built once, before, and shared copy-on-write), and:

- passes SIGTERM or SIGINT on to each as one SIGTERM, and waits for them:
  each drains its requests as a single ingress does;
- replaces a process that dies (killed, out of memory);
- stops them all and exits with status 3 when one fails to start (a broker
  out of reach, a bad setting), as uvicorn does: a replacement would fail the
  same way.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable

import uvicorn
from uvicorn.config import STARTUP_FAILURE

log = logging.getLogger("gatewayz.ingress")

# What the supervisor waits for; blocked in it, so they wait to be read.
_WATCHED = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}


def serve_processes(config: uvicorn.Config, count: int, *, ended: Callable[[int], None] | None = None) -> int:
    """Serve ``config``'s app from ``count`` processes on its host and port
    until SIGTERM or SIGINT; the exit status to end with. ``OSError`` when
    the address cannot be bound. ``ended`` is told the id of each process
    that ends (its metrics' files are let go)."""
    address = _reserve(config.host, config.port)
    config.port = address.getsockname()[1]  # port 0: the one the kernel chose, for every process
    signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
    children: set[int] = set()
    for _ in range(count):
        children.add(_fork(config, address))
    log.info("ingress: %d processes on %s:%d (%s)", count, config.host, config.port,
             ", ".join(str(pid) for pid in sorted(children)))
    status, stopping = 0, False
    while children:
        received = signal.sigwaitinfo(_WATCHED)
        if received.si_signo != signal.SIGCHLD:
            if not stopping:
                log.info("ingress: stopping %d processes", len(children))
                _stop(children)
            stopping = True  # a second signal: the processes already have theirs (Ctrl-C reaches them too)
            continue
        for pid, code in _reaped():
            children.discard(pid)
            if ended is not None:
                ended(pid)
            if stopping:
                continue
            if code == STARTUP_FAILURE:
                log.error("ingress: process %d could not start; stopping the others", pid)
                status, stopping = STARTUP_FAILURE, True
                _stop(children)
                continue
            log.error("ingress: process %d ended (exit status %d); starting another", pid, code)
            children.add(_fork(config, address))
    address.close()
    return status


def _reserve(host: str, port: int) -> socket.socket:
    """A socket bound to the address but not listening: it takes no
    connection, but holds the port for the processes' own sockets."""
    family, kind, proto, _, where = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                       flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    _share_port(sock)
    try:
        sock.bind(where)
    except OSError:
        sock.close()
        raise
    return sock


def _share_port(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def _fork(config: uvicorn.Config, address: socket.socket) -> int:
    pid = os.fork()
    if pid:
        return pid
    # The child. It must never return into the supervisor's code: it ends here.
    code = 1
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _WATCHED)
        code = _serve(config, address)
    except SystemExit as exit_:  # uvicorn's own exit when the lifespan fails to start
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # printed, then this process ends with status 1
        traceback.print_exc()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve(config: uvicorn.Config, address: socket.socket) -> int:
    sock = socket.socket(address.family, address.type, address.proto)
    _share_port(sock)
    sock.bind(address.getsockname())
    address.close()  # the supervisor's; this process listens on its own (uvicorn listens once started)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0 if server.started else STARTUP_FAILURE


def _stop(children: set[int]) -> None:
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue  # it just ended: reaped on the next SIGCHLD


def _reaped() -> list[tuple[int, int]]:
    """The children that ended, with their exit status (-N: killed by signal N)."""
    ended: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended.append((pid, os.waitstatus_to_exitcode(status)))
