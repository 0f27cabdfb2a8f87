"""Property tests: garbage yields frames or protocol errors, never another exception."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from typing import Any, Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from asyncapy import Client, Packet
from asyncapy.client import AsyncClient
from asyncapy.wire.codecs import CODECS, DecodeError, get_codec
from asyncapy.wire.protocol import (
    NEED_DATA,
    PUSH,
    REPLY,
    SENT_BY_CLIENT,
    SENT_BY_SERVER,
    Frame,
    FrameDecoder,
    FrameError,
    V2Frame,
    encode_frame,
    encode_request,
)

from ..conftest import make_server, running

#: Small limits so that random lengths often land on both sides of them.
MAX_PACKET = 64
#: Cap on events drained per feed: a decoder that loops forever fails the test instead of hanging it.
MAX_EVENTS = 10_000


def _drain(decoder: FrameDecoder[Any]) -> list[Any]:
    events: list[Frame | V2Frame | FrameError] = []
    for _ in range(MAX_EVENTS):
        event = decoder.next_event()
        if event is NEED_DATA:
            return events
        assert isinstance(event, (Frame, V2Frame, FrameError))
        events.append(event)
    raise AssertionError("the decoder never asked for more data")


def _run(
    data: bytes, cuts: list[int], header_size: int, byteorder: str, kinds: frozenset[int] | None = None
) -> list[Any]:
    order: Literal["big", "little"] = "big" if byteorder == "big" else "little"
    decoder: FrameDecoder[Any] = FrameDecoder(header_size, order, MAX_PACKET, kinds=kinds)
    events: list[Any] = []
    start = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        decoder.feed(data[start:cut])
        start = cut
        events += _drain(decoder)
        # Bounded: one header plus one accepted body, plus the chunk just fed.
        assert decoder.buffered <= header_size + MAX_PACKET + len(data)
    return events


frames = st.builds(
    lambda payload, enc, version: (len(payload) + 2).to_bytes(4, "big") + bytes((version, enc)) + payload,
    st.binary(max_size=80),
    st.integers(0, 3),
    st.sampled_from([22, 22, 22, 0, 255]),
)
streams = st.one_of(st.binary(max_size=600), st.lists(st.one_of(frames, st.binary(max_size=8)), max_size=12).map(b"".join))


@settings(max_examples=400, deadline=None)
@given(
    data=streams,
    cuts=st.lists(st.integers(0, 600), max_size=20),
    header_size=st.sampled_from([1, 2, 4, 8]),
    byteorder=st.sampled_from(["big", "little"]),
)
def test_decoder_yields_frames_or_errors(data: bytes, cuts: list[int], header_size: int, byteorder: str) -> None:
    events = _run(data, [c for c in cuts if c <= len(data)], header_size, byteorder)
    fatal = [i for i, e in enumerate(events) if isinstance(e, FrameError) and e.fatal]
    assert fatal in ([], [len(events) - 1])  # nothing follows a fatal error
    for event in events:
        if isinstance(event, Frame):
            assert event.encoding in CODECS and len(event.payload) <= MAX_PACKET - 2


@settings(max_examples=200, deadline=None)
@given(data=streams, cuts=st.lists(st.integers(0, 600), max_size=20))
def test_decoder_is_cut_independent(data: bytes, cuts: list[int]) -> None:
    whole = _run(data, [], 4, "big")
    assert _run(data, [c for c in cuts if c <= len(data)], 4, "big") == whole


@settings(max_examples=200, deadline=None)
@given(payloads=st.lists(st.binary(max_size=60), max_size=10), cuts=st.lists(st.integers(0, 800), max_size=20))
def test_valid_frames_survive_any_cut(payloads: list[bytes], cuts: list[int]) -> None:
    data = b"".join(encode_frame(p, 0) for p in payloads)
    events = _run(data, [c for c in cuts if c <= len(data)], 4, "big")
    assert events == [Frame(0, p) for p in payloads]


def _event(raw: Any) -> Any:
    if type(raw) is tuple:
        return Frame(*raw) if len(raw) == 2 else V2Frame(*raw)
    return raw


def _run_batched(data: bytes, cuts: list[int], limits: list[int], kinds: frozenset[int] | None = None) -> list[Any]:
    """The server's calls: ``receive(chunk, limit)`` per read, then ``pull`` what a small limit left."""
    decoder: FrameDecoder[Any] = FrameDecoder(4, "big", MAX_PACKET, kinds=kinds)
    events: list[Any] = []
    start = 0
    for n, cut in enumerate(sorted(set(cuts)) + [len(data)]):
        limit = limits[n % len(limits)]
        batch = decoder.receive(data[start:cut], limit)
        start = cut
        assert len(batch) <= limit
        for _ in range(MAX_EVENTS):
            events += [_event(e) for e in batch]
            batch = decoder.pull(limit)
            if not batch:
                break
        assert decoder.buffered <= 4 + MAX_PACKET + len(data)
    for _ in range(MAX_EVENTS):  # what a zero limit left behind
        batch = decoder.pull(64)
        if not batch:
            return events
        events += [_event(e) for e in batch]
    raise AssertionError("the decoder never ran dry")


@settings(max_examples=300, deadline=None)
@given(data=streams, cuts=st.lists(st.integers(0, 600), max_size=20), limits=st.lists(st.integers(0, 4), min_size=1, max_size=5))
def test_batched_receive_equals_feed_and_next_event(data: bytes, cuts: list[int], limits: list[int]) -> None:
    cuts = [c for c in cuts if c <= len(data)]
    assert _run_batched(data, cuts, limits) == _run(data, cuts, 4, "big")


# -- v2: the same decoder reading both versions ----------------------------------------------

v2_frames = st.builds(
    lambda payload, enc, kind, stream_id, deadline, version, short: (
        (max(len(payload) + 11 - short, 0)).to_bytes(4, "big")
        + bytes((version, enc, kind))
        + stream_id.to_bytes(4, "big")
        + deadline.to_bytes(4, "big")
        + payload
    ),
    st.binary(max_size=60),
    st.integers(0, 3),
    st.integers(0, 7),
    st.sampled_from([0, 1, 2, 2**32 - 1]) | st.integers(0, 2**32 - 1),
    st.sampled_from([0, 1, 2**32 - 1]),
    st.sampled_from([23, 23, 23, 22, 0]),
    st.sampled_from([0, 0, 0, 1, 9, 11]),
)
mixed_streams = st.one_of(
    st.binary(max_size=600),
    st.lists(st.one_of(v2_frames, frames, st.binary(max_size=8)), max_size=12).map(b"".join),
)
both_sides = st.sampled_from([SENT_BY_CLIENT, SENT_BY_SERVER])


def _check_v2_events(events: list[Any], kinds: frozenset[int]) -> None:
    """Only frames of one version, of the side's kinds, with valid Stream-Ids; errors framed to match."""
    fatal = [i for i, e in enumerate(events) if isinstance(e, FrameError) and e.fatal]
    assert fatal in ([], [len(events) - 1])
    versions = {type(e) for e in events if not isinstance(e, FrameError)}
    assert len(versions) <= 1  # the first frame fixed the connection's version
    for event in events:
        if isinstance(event, V2Frame):
            assert event.kind in kinds and event.encoding in CODECS
            if event.stream_id == 0:
                assert event.kind in (REPLY, PUSH)  # a connection error, or a push
            else:
                assert event.kind != PUSH
            assert len(event.payload) <= MAX_PACKET - 11
        elif isinstance(event, Frame):
            assert event.encoding in CODECS and len(event.payload) <= MAX_PACKET - 2
        else:
            assert event.version in (22, 23) and 0 <= event.stream_id < 2**32


@settings(max_examples=400, deadline=None)
@given(
    data=mixed_streams,
    cuts=st.lists(st.integers(0, 600), max_size=20),
    header_size=st.sampled_from([1, 2, 4, 8]),
    byteorder=st.sampled_from(["big", "little"]),
    kinds=both_sides,
)
def test_two_version_decoder_yields_frames_or_errors(
    data: bytes, cuts: list[int], header_size: int, byteorder: str, kinds: frozenset[int]
) -> None:
    events = _run(data, [c for c in cuts if c <= len(data)], header_size, byteorder, kinds)
    _check_v2_events(events, kinds)
    # Once a frame of a version came out, every error after it is framed in that version.
    seen = None
    for event in events:
        if isinstance(event, (Frame, V2Frame)):
            seen = 23 if isinstance(event, V2Frame) else 22
        elif seen is not None:
            assert event.version == seen


@settings(max_examples=200, deadline=None)
@given(data=mixed_streams, cuts=st.lists(st.integers(0, 600), max_size=20), kinds=both_sides)
def test_two_version_decoder_is_cut_independent(data: bytes, cuts: list[int], kinds: frozenset[int]) -> None:
    whole = _run(data, [], 4, "big", kinds)
    assert _run(data, [c for c in cuts if c <= len(data)], 4, "big", kinds) == whole


@settings(max_examples=300, deadline=None)
@given(
    data=mixed_streams,
    cuts=st.lists(st.integers(0, 600), max_size=20),
    limits=st.lists(st.integers(0, 4), min_size=1, max_size=5),
    kinds=both_sides,
)
def test_two_version_batched_receive_equals_feed_and_next_event(
    data: bytes, cuts: list[int], limits: list[int], kinds: frozenset[int]
) -> None:
    cuts = [c for c in cuts if c <= len(data)]
    assert _run_batched(data, cuts, limits, kinds) == _run(data, cuts, 4, "big", kinds)


@settings(max_examples=400, deadline=None)
@given(data=streams, cuts=st.lists(st.integers(0, 600), max_size=20), header_size=st.sampled_from([1, 2, 4]))
def test_a_two_version_decoder_reads_v1_exactly_as_the_v1_decoder(data: bytes, cuts: list[int], header_size: int) -> None:
    """Byte for byte the same events, details included, unless a frame says Protocol-Version 23."""
    cuts = [c for c in cuts if c <= len(data)]
    v1 = _run(data, cuts, header_size, "big")
    if any(isinstance(e, FrameError) and "Protocol-Version 23" in e.detail for e in v1):
        return
    assert _run(data, cuts, header_size, "big", SENT_BY_CLIENT) == v1


@settings(max_examples=200, deadline=None)
@given(
    requests=st.lists(st.tuples(st.integers(1, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=50)), max_size=10),
    cuts=st.lists(st.integers(0, 800), max_size=20),
)
def test_valid_v2_frames_survive_any_cut(requests: list[tuple[int, int, bytes]], cuts: list[int]) -> None:
    data = b"".join(encode_request(s, p, 0, d) for s, d, p in requests)
    events = _run(data, [c for c in cuts if c <= len(data)], 4, "big", SENT_BY_CLIENT)
    assert events == [V2Frame(0, 0, s, d, p) for s, d, p in requests]


def _decode_or_error(name: str, data: bytes) -> Any:
    try:
        return get_codec(name).decode(data)
    except DecodeError:
        return DecodeError


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=300), name=st.sampled_from(["json", "ziproto"]))
def test_codecs_yield_values_or_decode_errors(data: bytes, name: str) -> None:
    _decode_or_error(name, data)


nested = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=nested, name=st.sampled_from(["json", "ziproto"]), flips=st.lists(st.integers(0, 10_000), max_size=4))
def test_codecs_on_mutated_documents(value: Any, name: str, flips: list[int]) -> None:
    codec = get_codec(name)
    data = bytearray(codec.encode(value))
    assert codec.decode(bytes(data)) == value
    for flip in flips:
        if data:
            data[flip % len(data)] ^= 0xFF
    _decode_or_error(name, bytes(data))


def test_deep_nesting_is_a_decode_error() -> None:
    assert _decode_or_error("json", b"[" * 100_000) is DecodeError
    assert _decode_or_error("ziproto", b"\x91" * 100_000 + b"\xc0") is not None


#: Garbage connections against a live server: every class many times, still quick.
GARBAGE_CONNECTIONS = 300


def _garbage(rng: random.Random) -> tuple[str, bytes]:
    """One connection's worth of bad input, and its class."""
    kind = rng.choice(["random_bytes", "random_payload", "random_header", "mixed_stream"])
    if kind == "random_bytes":
        return kind, rng.randbytes(rng.randrange(200))
    if kind == "random_payload":
        return kind, encode_frame(rng.randbytes(rng.randrange(100)), rng.randrange(2))
    if kind == "random_header":
        payload = rng.randbytes(rng.randrange(50))
        return kind, (len(payload) + 2).to_bytes(4, "big") + bytes((rng.randrange(256), rng.randrange(256))) + payload
    parts = [encode_frame(b'{"ok": 1}', 0), rng.randbytes(rng.randrange(20)), encode_frame(b"\x81\xa1k\x01", 1)]
    rng.shuffle(parts)
    return kind, b"".join(parts)


async def _send_garbage(port: int, data: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    writer.write_eof()
    decoder = FrameDecoder(max_packet_size=1 << 20, kinds=SENT_BY_SERVER)  # garbage may start as v2
    decoder.feed(await asyncio.wait_for(reader.read(), 10))
    for event in _drain(decoder):  # whatever came back is well-formed
        assert isinstance(event, (Frame, V2Frame))
        assert isinstance(get_codec(event.encoding).decode(event.payload), dict)
    writer.close()


async def test_server_survives_garbage(caplog: Any) -> None:
    server = make_server()

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    rng = random.Random(5)
    kinds: Counter[str] = Counter()
    async with running(server):
        for _ in range(GARBAGE_CONNECTIONS // 30):
            batch = [_garbage(rng) for _ in range(30)]
            kinds.update(kind for kind, _ in batch)
            await asyncio.gather(*(_send_garbage(server.port, data) for _, data in batch))
        async with AsyncClient("127.0.0.1", server.port) as client:
            assert await client.request({"still": "serving"}) == {"still": "serving"}
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert len(kinds) == 4
