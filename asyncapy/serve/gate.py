"""The gate: the first protocol of a connection that must wait before it is served.

With ``Server(proxy_protocol=True)`` the gate reads the PROXY header (the sans-IO
``asyncapy.proxy`` decoder), so that ``client.address``, ``filters.Ip``,
``session_limit``, rate limits and the logs see the client, not the balancer. A
connection from an address outside ``trusted_proxies``, one whose header is invalid or
does not come within ``PROXY_HEADER_TIMEOUT``, is closed without a reply and logged
once. With a ``session_limit`` kept in the shared state, the gate then waits until the
state counted the session. Then it hands the transport to a ``Connection``
(``transport.set_protocol``) with the client's address and whatever arrived meanwhile.

A server with neither has no gate: the listener makes ``Connection`` s directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

from ..wire.errors import ERR_INTERNAL, ERR_SESSION_LIMIT_REACHED
from ..ops.logs import clean
from ..wire.protocol import NEED_DATA
from ..wire.proxy import Network, ProxyHeader, ProxyHeaderDecoder, ProxyHeaderError, is_trusted
from ..shared.state import SHARED_STATE_UNAVAILABLE, SharedSessions, SharedStateUnavailable

logger = logging.getLogger("asyncapy")

#: Seconds a trusted proxy has to send the header (a balancer sends it at once, with the
#: connection), or ``timeout`` when that is shorter.
PROXY_HEADER_TIMEOUT: Final = 5.0


class Served:
    """What the gate hands the transport to (``asyncapy.connection.Connection``)."""

    def open(self, transport: asyncio.Transport, host: str, port: int, refusal: tuple[str, str] | None = None,
             member: str | None = None) -> None: ...  # fmt: skip

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> bool | None: ...


class Gate(asyncio.Protocol):
    """One connection until it may be served; see the module docstring."""

    __slots__ = ("_admission", "_early", "_eof", "_make", "_peer", "_proxy", "_task", "_timeout", "_timer", "_transport",
                 "_trusted", "_done")  # fmt: skip

    def __init__(self, make: Callable[[], Any], trusted: tuple[Network, ...] | None,
                 admission: SharedSessions | None, timeout: float) -> None:  # fmt: skip
        self._make = make
        self._trusted = trusted
        self._admission = admission
        self._timeout = timeout
        self._proxy: ProxyHeaderDecoder | None = ProxyHeaderDecoder() if trusted is not None else None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._peer = ("unknown", 0)
        #: Bytes that came after the header while the session waits to be admitted.
        self._early = bytearray()
        self._eof = False
        self._done = False  # the transport went to a connection, or was closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports have the methods
        peer = transport.get_extra_info("peername") or ("unknown", 0)
        self._peer = host, port = str(peer[0]), int(peer[1])
        if self._trusted is None:
            self._admit(host, port)
            return
        if not is_trusted(host, self._trusted):
            trusted = ", ".join(map(str, self._trusted))
            self._drop(f"{host}:{port} is not a trusted proxy (trusted_proxies: {trusted})")
            return
        timeout = self._timeout
        delay = min(timeout, PROXY_HEADER_TIMEOUT) if timeout else PROXY_HEADER_TIMEOUT
        self._timer = asyncio.get_running_loop().call_later(delay, self._header_timed_out, delay)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        decoder = self._proxy
        if decoder is None:  # waiting for the admission: keep the bytes, read no more
            self._early += data
            self._transport.pause_reading()  # type: ignore[union-attr]
            return
        event = decoder.receive(data)
        if event is NEED_DATA:
            return
        self._proxy = None
        self._cancel_timer()
        if not isinstance(event, ProxyHeader):
            reason = event.reason if isinstance(event, ProxyHeaderError) else "?"
            self._drop(f"invalid PROXY header from {self._peer[0]}:{self._peer[1]}: {reason}")
            return
        self._early += decoder.rest
        host, port = event.source or self._peer
        if event.source is None:  # the proxy's own connection (LOCAL, UNKNOWN: health checks): not counted
            self._hand_over(host, port)
        else:
            self._admit(host, port)

    def eof_received(self) -> bool | None:
        if self._proxy is not None:
            peer = f"{self._peer[0]}:{self._peer[1]}"
            if self._proxy.buffered:
                self._drop(f"{peer} closed before a whole PROXY header")
            else:  # connected and closed, nothing sent: a port probe or a balancer's TCP check
                logger.debug("A connection from %s closed before sending anything", peer)
                self._drop(None)
            return None
        self._eof = True
        return True  # keep the write side open: its packets are answered once admitted

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._done = True
        if self._task is not None:
            self._task.cancel()

    def _admit(self, host: str, port: int) -> None:
        """Count the session in the shared state first, when the limit is kept there."""
        admission = self._admission
        if admission is None:
            self._hand_over(host, port)
            return
        self._task = asyncio.get_running_loop().create_task(self._admitted(admission, host, port))

    async def _admitted(self, admission: SharedSessions, host: str, port: int) -> None:
        try:
            member = await admission.admit(host)
        except SharedStateUnavailable:
            self._hand_over(host, port, (ERR_INTERNAL, SHARED_STATE_UNAVAILABLE))
            return
        if self._done:  # the peer left while we asked
            if member is not None:
                admission.leave(host, member)
            return
        if member is None:
            self._hand_over(host, port, (ERR_SESSION_LIMIT_REACHED, f"{host} is at its limit of {admission.limit} sessions"))
            return
        self._hand_over(host, port, None, member)

    def _hand_over(self, host: str, port: int, refusal: tuple[str, str] | None = None, member: str | None = None) -> None:
        """Give the transport to a connection, with what arrived meanwhile."""
        transport = self._transport
        if self._done or transport is None:
            return
        self._done = True
        conn = self._make()
        transport.set_protocol(conn)
        conn.open(transport, host, port, refusal, member)
        early, self._early = bytes(self._early), bytearray()
        if early:
            conn.data_received(early)
        if self._eof:
            if not conn.eof_received():
                transport.close()
        elif not transport.is_closing() and not transport.is_reading():
            transport.resume_reading()

    def _header_timed_out(self, delay: float) -> None:
        self._timer = None
        if self._proxy is not None:
            self._drop(f"no whole PROXY header from {self._peer[0]}:{self._peer[1]} within {delay} s")

    def _drop(self, why: str | None) -> None:
        """Close without a reply: whoever this is, it is not a client speaking through our proxy
        (logged once, with ``why``; None: nothing to warn about)."""
        if self._done:
            return
        if why is not None:
            logger.warning("Closed a connection without reply: %s", clean(why))
        self._proxy = None
        self._done = True
        self._cancel_timer()
        if self._transport is not None:
            self._transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
