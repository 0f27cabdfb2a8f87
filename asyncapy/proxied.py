"""Connections whose first packet waits: behind a PROXY header, or a shared admission.

With ``Server(proxy_protocol=True)``, ``GatedConnection`` first reads the PROXY header (with the
sans-IO ``asyncapy.proxy`` decoder), then opens the session under the client's real
address, so that ``client.address``, ``filters.Ip``, ``session_limit``, rate limits
and the logs all see the client, not the balancer. A connection from an address
outside ``trusted_proxies``, one whose header is invalid or does not come within
``PROXY_HEADER_TIMEOUT``, is closed without a reply and logged. With a
``session_limit`` kept in the shared state, its packets wait until the session is
admitted. A server with neither uses the plain ``Connection``: it pays nothing for this.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final, cast

from .connection import Connection, ServingContext
from .logs import clean
from .protocol import NEED_DATA
from .proxy import Network, ProxyHeader, ProxyHeaderDecoder, ProxyHeaderError, is_trusted


logger = logging.getLogger("asyncapy")

#: Seconds a trusted proxy has to send the header (a balancer sends it at once, with the
#: connection), or ``timeout`` when that is shorter.
PROXY_HEADER_TIMEOUT: Final = 5.0


class GatedConnection(Connection):
    """A ``Connection`` whose packets wait for a gate: the PROXY header (when ``trusted``
    is set), then the shared state's admission of its session (``SharedSessions``).

    Pausing the transport is not enough to make bytes wait: Python 3.10's selector
    transport starts reading after ``connection_made`` even when it was paused there.
    So bytes that arrive while the session is being admitted are kept in ``_early``
    (and reading is paused again) and handled once it is admitted.
    """

    __slots__ = ("_early", "_proxy", "_proxy_timer", "_proxy_peer", "_trusted")

    def __init__(self, ctx: ServingContext, trusted: tuple[Network, ...] | None) -> None:
        super().__init__(ctx)
        self._trusted = trusted
        self._proxy: ProxyHeaderDecoder | None = ProxyHeaderDecoder() if trusted is not None else None
        self._proxy_timer: asyncio.TimerHandle | None = None
        self._proxy_peer = ("unknown", 0)
        #: Not None while the session waits to be admitted: the bytes received meanwhile.
        self._early: bytearray | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._trusted is None:
            Connection.connection_made(self, transport)
            self._admit()
            return
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("unknown", 0)
        self._proxy_peer = host, port = str(peer[0]), int(peer[1])
        if not is_trusted(host, self._trusted):
            trusted = ", ".join(map(str, self._trusted))
            self._drop(f"{host}:{port} is not a trusted proxy (trusted_proxies: {trusted})")
            return
        timeout = self._ctx.timeout
        delay = min(timeout, PROXY_HEADER_TIMEOUT) if timeout else PROXY_HEADER_TIMEOUT
        self._proxy_timer = self._loop.call_later(delay, self._header_timed_out, delay)

    def _open(self, transport: asyncio.Transport, host: str, port: int, client: bool) -> None:
        """Start the session of the client at ``host:port``, the one the PROXY header named.

        ``client`` is False for the proxy's own connections (a LOCAL or UNKNOWN header:
        health checks): they are not counted against the shared ``session_limit``.
        """
        Connection.connection_made(self, cast(asyncio.Transport, _RealPeer(transport, (host, port))))
        self._transport = transport
        if client:
            self._admit()

    def _admit(self) -> None:
        """With a shared ``session_limit``: hold the packets until the shared state counted the session."""
        admission = self._ctx.admission
        if admission is not None and self._registered:
            self._early = bytearray()
            admission.admit(self)

    def data_received(self, data: bytes) -> None:
        early = self._early
        if early is not None:  # the session is being admitted
            if not early and self._transport is not None:
                self._transport.resume_reading()  # Python 3.10: paused in name only; pause for real
                self._transport.pause_reading()
            early += data
            return
        decoder = self._proxy
        if decoder is None:
            Connection.data_received(self, data)
            return
        if self.closing:
            return
        event = decoder.receive(data)
        if event is NEED_DATA:
            return
        self._proxy = None
        self._cancel_timer()
        if not isinstance(event, ProxyHeader):
            reason = event.reason if isinstance(event, ProxyHeaderError) else "?"
            self._drop(f"invalid PROXY header from {self._proxy_peer[0]}:{self._proxy_peer[1]}: {reason}")
            return
        host, port = event.source or self._proxy_peer
        assert self._transport is not None
        self._open(self._transport, host, port, event.source is not None)
        if self._early is not None:
            self._early += decoder.rest
        elif decoder.rest:
            Connection.data_received(self, decoder.rest)

    def _release_reading(self, reason: str) -> None:
        Connection._release_reading(self, reason)
        early = self._early
        if early is not None and not self._holds:
            self._early = None
            if early and not self.closing:
                Connection.data_received(self, bytes(early))
            if self._eof and not self._working:
                self.close()  # the peer finished sending while it waited

    def eof_received(self) -> bool | None:
        if self._proxy is not None:
            peer = f"{self._proxy_peer[0]}:{self._proxy_peer[1]}"
            if self._proxy.buffered:
                self._drop(f"{peer} closed before a whole PROXY header")
            else:  # connected and closed, nothing sent: a port probe or a balancer's TCP check, no malformed header
                logger.debug("A connection from %s closed before sending anything", peer)
                self._drop(None)
            return None
        if self._early is not None:
            self._eof = True
            return True  # keep the write side open: its packets are answered once admitted
        return Connection.eof_received(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._registered and self._ctx.admission is not None:
            self._ctx.admission.leave(self)
        Connection.connection_lost(self, exc)

    def _header_timed_out(self, delay: float) -> None:
        self._proxy_timer = None
        if self._proxy is not None:
            self._proxy = None
            self._drop(f"no whole PROXY header from {self._proxy_peer[0]}:{self._proxy_peer[1]} within {delay} s")

    def _drop(self, why: str | None) -> None:
        """Close without a reply: whoever this is, it is not a client speaking through our proxy
        (logged with ``why``; None: nothing to warn about)."""
        if why is not None:
            logger.warning("Closed a connection without reply: %s", clean(why))
        self._proxy = None
        self._cancel_timer()
        self.closing = True
        if self._transport is not None:
            self._transport.close()

    def _cancel_timer(self) -> None:
        if self._proxy_timer is not None:
            self._proxy_timer.cancel()
            self._proxy_timer = None


class _RealPeer:
    """The transport as ``Connection.connection_made`` sees it behind a PROXY header: its
    ``peername`` is the client's address; everything else is the transport's."""

    __slots__ = ("_transport", "_peer")

    def __init__(self, transport: asyncio.Transport, peer: tuple[str, int]) -> None:
        self._transport = transport
        self._peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:  # write, close, pause_reading... while the session opens
        return getattr(self._transport, name)


def connection_factory(ctx: ServingContext, trusted: tuple[Network, ...] | None) -> Callable[[], Connection]:
    """What the listener makes per accepted socket: a plain ``Connection`` unless a PROXY
    header (``trusted`` set) or a shared admission gates it."""
    if trusted is None and ctx.admission is None:
        return lambda: Connection(ctx)
    return lambda: GatedConnection(ctx, trusted)
