"""The sans-IO PROXY header decoder: whole, byte by byte, with trailing data, and fuzzed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncapy.wire.protocol import NEED_DATA, encode_frame
from asyncapy.wire.proxy import (
    V1_MAX_LENGTH,
    V2_FIXED_LENGTH,
    V2_MAX_BODY,
    V2_SIGNATURE,
    ProxyEvent,
    ProxyHeader,
    ProxyHeaderDecoder,
    ProxyHeaderError,
    check_trusted_proxies,
    encode_v1,
    encode_v2,
    is_trusted,
    trusted_networks,
)

FRAME = encode_frame(b'{"test": 1}', 0)

V1_TCP4 = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 1500\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 1500\r\n"
V2_TCP4 = encode_v2(("192.0.2.7", 56324), ("10.0.0.1", 1500))
V2_TCP6 = encode_v2(("2001:db8::7", 56324), ("2001:db8::1", 1500))

VALID = [
    (V1_TCP4, ProxyHeader(1, ("192.0.2.7", 56324), ("10.0.0.1", 1500))),
    (V1_TCP6, ProxyHeader(1, ("2001:db8::7", 56324), ("2001:db8::1", 1500))),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, None, None)),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", ProxyHeader(1, None, None)),
    (V2_TCP4, ProxyHeader(2, ("192.0.2.7", 56324), ("10.0.0.1", 1500))),
    (V2_TCP6, ProxyHeader(2, ("2001:db8::7", 56324), ("2001:db8::1", 1500))),
    (encode_v2(None), ProxyHeader(2, None, None)),  # LOCAL: a health check
    # TLVs after the addresses are skipped (here: a PP2_TYPE_ALPN of 2 bytes).
    (V2_SIGNATURE + b"\x21\x11\x00\x11" + bytes(12) + b"\x01\x00\x02h2", ProxyHeader(2, ("0.0.0.0", 0), ("0.0.0.0", 0))),
    # AF_UNSPEC and AF_UNIX: the connection's own address is used.
    (V2_SIGNATURE + b"\x21\x00\x00\x00", ProxyHeader(2, None, None)),
    (V2_SIGNATURE + b"\x21\x31\x00\xd8" + bytes(216), ProxyHeader(2, None, None)),
]

INVALID = [
    b"GET / HTTP/1.1\r\n",
    b"\x00\x00\x00\r\x16\x00",  # an AsyncAProto frame: a client that bypassed the balancer
    b"PROXY TCP4 192.0.2.7 10.0.0.1 56324\r\n",  # a field missing
    b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 1500 extra\r\n",
    b"PROXY TCP5 192.0.2.7 10.0.0.1 56324 1500\r\n",
    b"PROXY TCP4 2001:db8::7 10.0.0.1 56324 1500\r\n",  # the wrong family
    b"PROXY TCP4 192.0.2.07 10.0.0.1 56324 1500\r\n",  # a leading zero
    b"PROXY TCP4 192.0.2.7 10.0.0.1 056324 1500\r\n",
    b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 1500\r\n",
    b"PROXY TCP4 192.0.2.7 10.0.0.1 -1 1500\r\n",
    b"PROXY TCP6 fe80::1%eth0 2001:db8::1 1 2\r\n",
    b"PROXY TCP4 192.0.2.7  10.0.0.1 56324 1500\r\n",  # two spaces
    b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 1500\n",  # LF without CR
    b"PROXY " + b"A" * V1_MAX_LENGTH,  # no CRLF within the bound
    b"PROXY TCP4 \xc3\xa9.0.2.7 10.0.0.1 1 2\r\n",
    b"proxy TCP4 192.0.2.7 10.0.0.1 56324 1500\r\n",
    V2_SIGNATURE[:11] + b"X" + b"\x21\x11\x00\x0c" + bytes(12),
    V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in a v2 header
    V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
    V2_SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12),  # UDP
    V2_SIGNATURE + b"\x21\x41\x00\x0c" + bytes(12),  # family 4
    V2_SIGNATURE + b"\x21\x11\x00\x08" + bytes(8),  # too short for IPv4 addresses
    V2_SIGNATURE + b"\x21\x21\x00\x0c" + bytes(12),  # too short for IPv6 addresses
    V2_SIGNATURE + b"\x21\x11" + (V2_MAX_BODY + 1).to_bytes(2, "big"),  # over the bound: rejected from 16 bytes
]


def _whole(data: bytes) -> tuple[ProxyEvent, bytes]:
    decoder = ProxyHeaderDecoder()
    event = decoder.receive(data)
    return event, decoder.rest


def _bytewise(data: bytes) -> tuple[ProxyEvent, bytes]:
    """Byte by byte; once an event comes, the rest of ``data`` is trailing."""
    decoder = ProxyHeaderDecoder()
    for i in range(len(data)):
        event = decoder.receive(data[i : i + 1])
        if event is not NEED_DATA:
            return event, decoder.rest + data[i + 1 :]
        assert decoder.buffered <= V2_FIXED_LENGTH + V2_MAX_BODY
    return NEED_DATA, b""


@pytest.mark.parametrize(("data", "header"), VALID)
def test_valid_headers_whole_bytewise_and_with_trailing_data(data: bytes, header: ProxyHeader) -> None:
    assert _whole(data) == (header, b"")
    assert _bytewise(data) == (header, b"")
    assert _whole(data + FRAME + FRAME) == (header, FRAME + FRAME)
    assert _bytewise(data + FRAME) == (header, FRAME)


@pytest.mark.parametrize("data", INVALID)
def test_invalid_headers_are_errors_however_cut(data: bytes) -> None:
    whole, _ = _whole(data + FRAME)
    assert isinstance(whole, ProxyHeaderError), whole
    bytewise, _ = _bytewise(data + FRAME)
    assert isinstance(bytewise, ProxyHeaderError), bytewise


def test_wrong_first_bytes_are_rejected_at_once() -> None:
    for first in (b"\x00", b"G", b"PR0", V2_SIGNATURE[:5] + b"x"):
        assert isinstance(ProxyHeaderDecoder().receive(first), ProxyHeaderError)
    # An oversized v2 length is refused from its 16 fixed bytes, before any body arrives.
    head = V2_SIGNATURE + b"\x21\x11\xff\xff"
    assert isinstance(ProxyHeaderDecoder().receive(head), ProxyHeaderError)


def test_partial_headers_need_data() -> None:
    for data in (V1_TCP4, V2_TCP6):
        for cut in range(len(data)):
            assert ProxyHeaderDecoder().receive(data[:cut]) is NEED_DATA


def test_the_longest_v1_line_is_accepted() -> None:
    address = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = f"PROXY TCP6 {address} {address} 65535 65535\r\n".encode()
    assert _whole(line)[0] == ProxyHeader(1, (address, 65535), (address, 65535))
    unknown = f"PROXY UNKNOWN {address} {address} 65535 65535\r\n".encode()
    assert len(unknown) == V1_MAX_LENGTH  # the spec's worst case
    assert _bytewise(unknown + FRAME) == (ProxyHeader(1, None, None), FRAME)


def test_decoder_is_single_use() -> None:
    decoder = ProxyHeaderDecoder()
    decoder.receive(V1_TCP4)
    with pytest.raises(RuntimeError):
        decoder.receive(b"more")


def test_encoders_round_trip() -> None:
    assert encode_v1(("192.0.2.7", 56324), ("10.0.0.1", 1500)) == V1_TCP4
    assert _whole(encode_v1(("::1", 1), ("::2", 2)))[0] == ProxyHeader(1, ("::1", 1), ("::2", 2))


def test_trusted_networks() -> None:
    nets = trusted_networks(["10.0.0.0/8", "192.168.1.10", "::1"])
    assert is_trusted("10.1.2.3", nets) and is_trusted("192.168.1.10", nets) and is_trusted("::1", nets)
    assert is_trusted("::ffff:10.0.0.1", nets)  # a dual-stack socket's view of an IPv4 peer
    assert not is_trusted("11.0.0.1", nets) and not is_trusted("unknown", nets)
    assert [str(n) for n in check_trusted_proxies(True, None)] == ["127.0.0.0/8", "::1/128"]
    with pytest.raises(ValueError, match="not an IP address"):
        trusted_networks(["10.0.0.0/33"])
    with pytest.raises(ValueError, match="list"):
        trusted_networks("10.0.0.0/8")
    with pytest.raises(ValueError, match="empty"):
        trusted_networks([])
    with pytest.raises(ValueError, match="proxy_protocol"):
        check_trusted_proxies(False, ["10.0.0.0/8"])


# -- fuzzed: garbage yields a header, an error or NEED_DATA; never another exception ------

headers = st.one_of(
    st.sampled_from([data for data, _ in VALID] + INVALID),
    st.builds(lambda body: V2_SIGNATURE + b"\x21\x11" + len(body).to_bytes(2, "big") + body, st.binary(max_size=64)),
    st.builds(lambda a, b: b"PROXY " + a + b" " + b, st.binary(max_size=40), st.binary(max_size=40)),
)


def _mutate(data: bytes, flips: list[int]) -> bytes:
    out = bytearray(data)
    for flip in flips:
        if out:
            out[flip % len(out)] ^= (flip >> 8) & 0xFF or 1
    return bytes(out)


def _run(data: bytes, cuts: list[int]) -> tuple[ProxyEvent, bytes]:
    decoder = ProxyHeaderDecoder()
    start = 0
    for cut in sorted(set(c for c in cuts if c <= len(data))) + [len(data)]:
        event = decoder.receive(data[start:cut])
        if event is not NEED_DATA:  # what follows an error is never read: no rest
            return event, decoder.rest + data[cut:] if isinstance(event, ProxyHeader) else b""
        start = cut
        assert decoder.buffered <= max(V1_MAX_LENGTH, V2_FIXED_LENGTH + V2_MAX_BODY)
    return NEED_DATA, b""


@settings(max_examples=500, deadline=None)
@given(
    data=st.one_of(st.binary(max_size=300), headers, st.tuples(headers, st.lists(st.integers(0, 1 << 16), max_size=3)).map(lambda t: _mutate(*t))),
    trailing=st.binary(max_size=20),
    cuts=st.lists(st.integers(0, 320), max_size=12),
)
def test_decoder_fuzzed_and_cut_independent(data: bytes, trailing: bytes, cuts: list[int]) -> None:
    stream = data + trailing
    whole = _run(stream, [])
    assert isinstance(whole[0], (ProxyHeader, ProxyHeaderError)) or whole[0] is NEED_DATA
    assert _run(stream, cuts) == whole
    event, rest = whole
    if isinstance(event, ProxyHeader):
        assert stream.endswith(rest) and len(stream) - len(rest) <= V2_FIXED_LENGTH + V2_MAX_BODY
        for source in (event.source, event.destination):
            assert source is None or 0 <= source[1] <= 65535
