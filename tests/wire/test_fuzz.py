"""Property tests: garbage yields frames or protocol errors, never another exception."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from asyncapy import Client, Packet
from asyncapy.client import AsyncClient
from asyncapy.wire.codecs import CODECS, DecodeError, get_codec
from asyncapy.wire.protocol import NEED_DATA, Frame, FrameDecoder, FrameError, encode_frame

from ..conftest import make_server, running

#: Small limits so that random lengths often land on both sides of them.
MAX_PACKET = 64
#: Cap on events drained per feed: a decoder that loops forever fails the test instead of hanging it.
MAX_EVENTS = 10_000


def _drain(decoder: FrameDecoder) -> list[Frame | FrameError]:
    events: list[Frame | FrameError] = []
    for _ in range(MAX_EVENTS):
        event = decoder.next_event()
        if event is NEED_DATA:
            return events
        assert isinstance(event, (Frame, FrameError))
        events.append(event)
    raise AssertionError("the decoder never asked for more data")


def _run(data: bytes, cuts: list[int], header_size: int, byteorder: str) -> list[Frame | FrameError]:
    decoder = FrameDecoder(header_size, "big" if byteorder == "big" else "little", MAX_PACKET)
    events: list[Frame | FrameError] = []
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


def _run_batched(data: bytes, cuts: list[int], limits: list[int]) -> list[Frame | FrameError]:
    """The server's calls: ``receive(chunk, limit)`` per read, then ``pull`` what a small limit left."""
    decoder = FrameDecoder(4, "big", MAX_PACKET)
    events: list[Frame | FrameError] = []
    start = 0
    for n, cut in enumerate(sorted(set(cuts)) + [len(data)]):
        limit = limits[n % len(limits)]
        batch = decoder.receive(data[start:cut], limit)
        start = cut
        assert len(batch) <= limit
        for _ in range(MAX_EVENTS):
            events += [Frame(*e) if type(e) is tuple else e for e in batch]  # type: ignore[misc]
            batch = decoder.pull(limit)
            if not batch:
                break
        assert decoder.buffered <= 4 + MAX_PACKET + len(data)
    for _ in range(MAX_EVENTS):  # what a zero limit left behind
        batch = decoder.pull(64)
        if not batch:
            return events
        events += [Frame(*e) if type(e) is tuple else e for e in batch]  # type: ignore[misc]
    raise AssertionError("the decoder never ran dry")


@settings(max_examples=300, deadline=None)
@given(data=streams, cuts=st.lists(st.integers(0, 600), max_size=20), limits=st.lists(st.integers(0, 4), min_size=1, max_size=5))
def test_batched_receive_equals_feed_and_next_event(data: bytes, cuts: list[int], limits: list[int]) -> None:
    cuts = [c for c in cuts if c <= len(data)]
    assert _run_batched(data, cuts, limits) == _run(data, cuts, 4, "big")


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
    decoder = FrameDecoder(max_packet_size=1 << 20)
    decoder.feed(await asyncio.wait_for(reader.read(), 10))
    for event in _drain(decoder):  # whatever came back is well-formed
        assert isinstance(event, Frame)
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
