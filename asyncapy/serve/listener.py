"""Accepting connections, with a back-off when the process runs out of descriptors.

asyncio's accept loop, on EMFILE/ENFILE, logs the error with its traceback and goes
on calling ``accept`` for the rest of its backlog (1,024 tries, 1,024 tracebacks)
every time the listening socket is readable: a starved server spends most of a CPU
writing megabytes of log a second. ``Listener`` accepts instead: on a descriptor
shortage it stops watching the listening socket and tries again after 5 ms, doubling
to 1 s as long as the shortage lasts (what Go's net/http does), logs the condition
at most once a second, and says so when it accepts again. The connections that
arrive meanwhile wait in the kernel's backlog.

``timeout`` also bounds the TLS handshake: a peer that connects and never sends a
ClientHello is dropped after ``timeout`` seconds rather than asyncio's 60.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl as _ssl
from collections.abc import Callable
from typing import Any, Final

logger = logging.getLogger("asyncapy")

#: The first retry after a descriptor shortage, doubled at each failed retry up to
#: ``MAX_BACKOFF`` (Go's net/http uses the same numbers).
FIRST_BACKOFF: Final = 0.005
MAX_BACKOFF: Final = 1.0
#: A shortage is logged at most once per this many seconds while it lasts.
LOG_EVERY: Final = 1.0
#: accept() errors that mean "out of a system resource" (the usual reason to back off).
STARVED: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: accept() errors of the one connection being accepted (Linux reports a new connection's
#: pending network error this way): skip it and accept the next, as for EAGAIN.
CONNECTION_FAILED: Final = frozenset(
    getattr(errno, name)
    for name in ("ECONNABORTED", "EPROTO", "EPERM", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
                 "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH")
    if hasattr(errno, name)
)  # fmt: skip


async def listen(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], asyncio.Protocol],
    host: str | None,
    port: int,
    *,
    sock: socket.socket | None = None,
    ssl: _ssl.SSLContext | None = None,
    backlog: int = 100,
    reuse_port: bool | None = None,
    handshake_timeout: float | None = None,
) -> Listener | asyncio.Server:
    """Listen like ``loop.create_server``; on loops with ``add_reader``, through a ``Listener``.

    Binding is still ``create_server``'s (addresses, IPv6, SO_REUSEPORT); only the
    accepting is ours. Other loops (uvloop, whose libuv accept loop does not spin on
    EMFILE; the proactor) serve through ``create_server`` as they are.
    """
    timeout = handshake_timeout if ssl is not None else None
    if not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
        if sock is not None:
            return await loop.create_server(factory, sock=sock, ssl=ssl, backlog=backlog, ssl_handshake_timeout=timeout)
        return await loop.create_server(
            factory, host, port, ssl=ssl, backlog=backlog, reuse_port=reuse_port, ssl_handshake_timeout=timeout
        )
    if sock is not None:
        sockets = [sock]
    else:
        bound = await loop.create_server(factory, host, port, backlog=backlog, reuse_port=reuse_port, start_serving=False)
        sockets = [s.dup() for s in bound.sockets]  # ours to listen on; the originals close with ``bound``
        bound.close()
    return Listener(loop, sockets, factory, ssl=ssl, backlog=backlog, handshake_timeout=timeout)


class Listener(asyncio.AbstractServer):
    """Accepts connections on listening ``sockets`` for ``factory``; see the module docstring."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sockets: list[socket.socket],
        factory: Callable[[], asyncio.Protocol],
        *,
        ssl: _ssl.SSLContext | None = None,
        backlog: int = 100,
        handshake_timeout: float | None = None,
    ) -> None:
        self._loop = loop
        self._sockets = sockets
        self._factory = factory
        self._ssl = ssl
        self._backlog = backlog
        self._handshake_timeout = handshake_timeout
        self._serving = True
        self._retries: dict[socket.socket, asyncio.TimerHandle] = {}
        self._backoff = 0.0  # the current retry delay; 0 while accepting normally
        self._starved_since = 0.0
        self._failures = 0  # failed accepts since the last log line
        self._next_log = 0.0
        self._handshakes: set[asyncio.Task[Any]] = set()
        for listening in sockets:
            listening.setblocking(False)
            listening.listen(backlog)
            loop.add_reader(listening.fileno(), self._accept, listening)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._sockets)

    def close(self) -> None:
        """Stop accepting and close the listening sockets (accepted connections stay)."""
        if not self._serving:
            return
        self._serving = False
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()
        for listening in self._sockets:
            if listening.fileno() >= 0:
                self._loop.remove_reader(listening.fileno())
                listening.close()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        """Serving starts when the listener is made."""

    async def serve_forever(self) -> None:
        while self._serving:
            await asyncio.sleep(MAX_BACKOFF)

    async def wait_closed(self) -> None:
        if self._handshakes:
            await asyncio.wait(set(self._handshakes))

    # -- accepting ---------------------------------------------------------------------

    def _accept(self, listening: socket.socket) -> None:
        """The listening socket is readable: accept up to ``backlog`` connections."""
        for _ in range(self._backlog):
            try:
                conn, _address = listening.accept()
            except (BlockingIOError, InterruptedError):
                return  # the queue is empty
            except OSError as exc:
                if exc.errno in CONNECTION_FAILED:
                    continue  # that peer is gone (or refused by a firewall rule): the next one
                self._starved(listening, exc)  # out of descriptors or memory (or an unknown failure): back off
                return
            if self._backoff:
                self._recovered()
            conn.setblocking(False)
            self._start(conn)

    def _start(self, conn: socket.socket) -> None:
        """Make the connection's transport (after the TLS handshake, if any) and its protocol."""
        accepted = self._loop.connect_accepted_socket(
            self._factory, conn, ssl=self._ssl, ssl_handshake_timeout=self._handshake_timeout
        )
        task = self._loop.create_task(accepted)
        self._handshakes.add(task)
        task.add_done_callback(self._started)

    def _started(self, task: asyncio.Task[Any]) -> None:
        self._handshakes.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a TLS handshake failed or timed out; the socket is closed
            logger.debug("A connection failed before it started: %r", exc)

    def _starved(self, listening: socket.socket, exc: OSError) -> None:
        """Out of descriptors: stop watching ``listening``, retry later (doubling), log once per interval.

        Any other unexpected accept() failure is treated alike: retrying at once would spin.
        """
        loop = self._loop
        now = loop.time()
        if not self._backoff:
            self._starved_since = now
        self._backoff = min(self._backoff * 2, MAX_BACKOFF) if self._backoff else FIRST_BACKOFF
        self._failures += 1
        if now >= self._next_log:
            logger.error(
                "Cannot accept connections: %s; retrying in %.0f ms, backing off up to %.0f s "
                "(%d failed accept(s) since the last report)",
                exc.strerror or exc, self._backoff * 1000, MAX_BACKOFF, self._failures,
            )  # fmt: skip
            self._failures = 0
            self._next_log = now + LOG_EVERY
        loop.remove_reader(listening.fileno())
        self._retries[listening] = loop.call_later(self._backoff, self._retry, listening)

    def _retry(self, listening: socket.socket) -> None:
        self._retries.pop(listening, None)
        if self._serving:
            self._loop.add_reader(listening.fileno(), self._accept, listening)

    def _recovered(self) -> None:
        logger.warning(
            "Accepting connections again after %.1f s short of descriptors", self._loop.time() - self._starved_since
        )
        self._backoff = 0.0
        self._failures = 0
        self._next_log = 0.0
