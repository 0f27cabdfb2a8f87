"""The PROXY protocol (HAProxy's, versions 1 and 2) without I/O: bytes in, the client's address out.

A load balancer that speaks it sends one header before anything else on each
connection it opens to the server, saying who the real client is:

- v1, a text line: ``PROXY TCP4 203.0.113.7 10.0.0.1 56324 1500\\r\\n`` (at most 107 bytes);
- v2, binary: a 12-byte signature, version/command, family/transport, a 2-byte length,
  the addresses, then optional TLVs (ignored here).

``ProxyHeaderDecoder`` is fed the first bytes of a connection and answers ``NEED_DATA``,
a ``ProxyHeader`` (then ``rest`` holds the bytes that followed it: the first packets),
or a ``ProxyHeaderError``. It decides from the first byte which version it reads,
rejects a wrong prefix as soon as it arrives, and never buffers more than the longest
header it accepts. Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Union

from .protocol import NEED_DATA, _NeedData

#: The spec's bound on a v1 line, "PROXY TCP6 <39> <39> <5> <5>\r\n" included.
V1_MAX_LENGTH: Final = 107
V1_PREFIX: Final = b"PROXY "
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
#: Signature, version/command, family, length.
V2_FIXED_LENGTH: Final = 16
#: The most a v2 header may declare after its fixed part. Addresses take at most 216
#: bytes (AF_UNIX); the rest are TLVs (ALPN, authority, unique id, TLS details), a few
#: hundred bytes from HAProxy. 4 KiB leaves room for them and bounds what a broken
#: proxy can make the server buffer before the first packet.
V2_MAX_BODY: Final = 4096

_V2_LOCAL: Final = 0x20
_V2_PROXY: Final = 0x21
_STREAM: Final = 0x1
_DGRAM: Final = 0x2
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
#: Bytes of the address block per address family (the spec's sizes).
_V2_ADDRESS_SIZES: Final = {_AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}
_PORTS: Final = struct.Struct(">HH")

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
#: Who may send a PROXY header when none is named: this host only.
DEFAULT_TRUSTED_PROXIES: Final = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A valid header. ``source`` is the client's ``(address, port)``; None when the
    header says to use the connection's own addresses (v1 ``UNKNOWN``, v2 ``LOCAL``,
    or a family other than IPv4/IPv6, as the spec asks)."""

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None


@dataclass(frozen=True, slots=True)
class ProxyHeaderError:
    """The bytes are not a valid PROXY header; ``reason`` says why (for the log)."""

    reason: str


ProxyEvent = Union[ProxyHeader, ProxyHeaderError, _NeedData]


class ProxyHeaderDecoder:
    """Reads one PROXY header (v1 or v2) from the start of a connection; see the module docstring."""

    __slots__ = ("_buf", "_done", "rest")

    def __init__(self) -> None:
        self._buf = b""
        self._done = False
        #: The bytes received after the header, once it is complete.
        self.rest = b""

    def receive(self, data: bytes) -> ProxyEvent:
        """Add ``data``; the header, an error, or ``NEED_DATA``. Call again only after ``NEED_DATA``."""
        if self._done:
            raise RuntimeError("the PROXY header was already read")
        buf = self._buf = self._buf + data
        if not buf:
            return NEED_DATA
        if buf[0] == V1_PREFIX[0]:
            event = self._v1(buf)
        elif buf[0] == V2_SIGNATURE[0]:
            event = self._v2(buf)
        else:
            event = ProxyHeaderError(f"no PROXY header: the connection starts with byte 0x{buf[0]:02x}")
        if event is not NEED_DATA:
            self._done = True
            self._buf = b""
        return event

    @property
    def buffered(self) -> int:
        """Bytes held while the header is incomplete."""
        return len(self._buf)

    def _v1(self, buf: bytes) -> ProxyEvent:
        head = buf[: len(V1_PREFIX)]
        if not V1_PREFIX.startswith(head):
            return ProxyHeaderError("no PROXY header: the connection does not start with 'PROXY '")
        end = buf.find(b"\r\n", 0, V1_MAX_LENGTH)
        if end < 0:
            if len(buf) >= V1_MAX_LENGTH or b"\n" in buf:
                return ProxyHeaderError(f"PROXY v1 line not ended by CRLF within {V1_MAX_LENGTH} bytes")
            return NEED_DATA
        self.rest = buf[end + 2 :]
        return parse_v1_line(buf[:end])

    def _v2(self, buf: bytes) -> ProxyEvent:
        head = buf[: len(V2_SIGNATURE)]
        if not V2_SIGNATURE.startswith(head):
            return ProxyHeaderError("no PROXY header: the bytes are not the v2 signature")
        if len(buf) < V2_FIXED_LENGTH:
            return NEED_DATA
        command, family, length = buf[12], buf[13], int.from_bytes(buf[14:16], "big")
        if command not in (_V2_LOCAL, _V2_PROXY):
            return ProxyHeaderError(f"PROXY v2: unknown version/command byte 0x{command:02x}")
        if length > V2_MAX_BODY:
            return ProxyHeaderError(f"PROXY v2: header of {length} bytes is over the limit of {V2_MAX_BODY}")
        end = V2_FIXED_LENGTH + length
        if len(buf) < end:
            return NEED_DATA
        self.rest = buf[end:]
        return parse_v2_body(command, family, buf[V2_FIXED_LENGTH:end])


def parse_v1_line(line: bytes) -> ProxyHeader | ProxyHeaderError:
    """A v1 line without its CRLF: ``PROXY TCP4|TCP6 src dst sport dport`` or ``PROXY UNKNOWN ...``."""
    parts = line.split(b" ")
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        return ProxyHeader(1, None, None)  # the rest of the line is to be ignored (spec 2.1)
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        return ProxyHeaderError("PROXY v1: expected 'PROXY TCP4|TCP6 <src> <dst> <sport> <dport>'")
    version = 4 if parts[1] == b"TCP4" else 6
    try:
        source = _v1_address(parts[2], version), _v1_port(parts[4])
        destination = _v1_address(parts[3], version), _v1_port(parts[5])
    except ValueError as exc:
        return ProxyHeaderError(f"PROXY v1: {exc}")
    return ProxyHeader(1, source, destination)


def _v1_address(token: bytes, version: int) -> str:
    if not token.isascii() or b"%" in token:
        raise ValueError("an address is not plain IPv4/IPv6")
    text = token.decode("ascii")
    address = ipaddress.IPv4Address(text) if version == 4 else ipaddress.IPv6Address(text)
    return str(address)


def _v1_port(token: bytes) -> int:
    # Digits only, no sign, no leading zero (the spec's form): at most "65535".
    if not (token.isdigit() and token.isascii() and len(token) <= 5) or (len(token) > 1 and token[0] == 0x30):
        raise ValueError(f"bad port {token[:8]!r}")
    port = int(token)
    if port > 65535:
        raise ValueError(f"port {port} is over 65535")
    return port


def parse_v2_body(command: int, family: int, body: bytes) -> ProxyHeader | ProxyHeaderError:
    """The addresses of a v2 header from the bytes after its fixed part (TLVs ignored)."""
    if command == _V2_LOCAL:
        return ProxyHeader(2, None, None)  # the proxy's own connection (health checks)
    af, transport = family >> 4, family & 0xF
    if af > _AF_UNIX or transport > _DGRAM:
        return ProxyHeaderError(f"PROXY v2: unknown address family byte 0x{family:02x}")
    if transport == _DGRAM:
        return ProxyHeaderError("PROXY v2: a datagram (UDP) source on a stream connection")
    if af == _AF_UNSPEC:
        return ProxyHeader(2, None, None)
    size = _V2_ADDRESS_SIZES[af]
    if len(body) < size:
        return ProxyHeaderError(f"PROXY v2: {len(body)} bytes cannot hold the {size}-byte address block")
    if af == _AF_UNIX:
        return ProxyHeader(2, None, None)  # no IP to report: the connection's own is used
    n = 4 if af == _AF_INET else 16
    ip: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address] = (
        ipaddress.IPv4Address if af == _AF_INET else ipaddress.IPv6Address
    )
    sport, dport = _PORTS.unpack_from(body, 2 * n)
    return ProxyHeader(2, (str(ip(body[:n])), sport), (str(ip(body[n : 2 * n])), dport))


def encode_v1(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A v1 header for a TCP connection from ``source`` to ``destination`` (tests, tools)."""
    family = "TCP6" if ":" in source[0] else "TCP4"
    return f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode("ascii")


def encode_v2(source: tuple[str, int] | None, destination: tuple[str, int] | None = None) -> bytes:
    """A v2 header: PROXY for ``source`` -> ``destination``, or LOCAL when ``source`` is None."""
    if source is None:
        return V2_SIGNATURE + bytes((_V2_LOCAL, 0)) + (0).to_bytes(2, "big")
    src = ipaddress.ip_address(source[0])
    dst = ipaddress.ip_address(destination[0] if destination else ("::" if src.version == 6 else "0.0.0.0"))
    af = _AF_INET if src.version == 4 else _AF_INET6
    block = src.packed + dst.packed + _PORTS.pack(source[1], destination[1] if destination else 0)
    return V2_SIGNATURE + bytes((_V2_PROXY, af << 4 | _STREAM)) + len(block).to_bytes(2, "big") + block


def trusted_networks(addresses: Iterable[str]) -> tuple[Network, ...]:
    """Parse ``trusted_proxies`` (addresses or CIDR networks).

    Raises:
        ValueError: an entry is not an IP address or network.
    """
    if isinstance(addresses, str):
        raise ValueError(f"trusted_proxies is a list of addresses or networks, not the string {addresses!r}")
    networks = []
    for entry in addresses:
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise ValueError(f"trusted_proxies: {entry!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
    if not networks:
        raise ValueError("trusted_proxies is empty: no connection could ever be served")
    return tuple(networks)


def is_trusted(host: str, networks: tuple[Network, ...]) -> bool:
    """True if ``host`` (a peer address; IPv4-mapped IPv6 counts as IPv4) is in ``networks``."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == net.version and address in net for net in networks)


def check_trusted_proxies(enabled: bool, trusted: Iterable[str] | None) -> tuple[Network, ...]:
    """``Server``'s ``trusted_proxies`` setting, parsed (the default when None).

    Raises:
        ValueError: a bad entry, or ``trusted_proxies`` given without ``proxy_protocol``.
    """
    if trusted is None:
        return trusted_networks(DEFAULT_TRUSTED_PROXIES)
    if not enabled:
        raise ValueError("trusted_proxies needs proxy_protocol=True (it says who may send the PROXY header)")
    return trusted_networks(trusted)
