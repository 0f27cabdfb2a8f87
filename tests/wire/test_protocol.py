"""The sans-IO framing: whole buffers, one byte at a time, trailing data, and limits."""

from __future__ import annotations

import pytest

from asyncapy.client import ClientCore
from asyncapy.wire.errors import ERR_HEADER_INVALID, ERR_PAYLOAD_TOO_LARGE
from asyncapy.wire.protocol import NEED_DATA, check_byteorder, Frame, FrameDecoder, FrameError, encode_frame

DOC_PACKET = b'\x00\x00\x00\r\x16\x00{"test": 1}'


def drain(decoder: FrameDecoder) -> list[Frame | FrameError]:
    events: list[Frame | FrameError] = []
    while True:
        event = decoder.next_event()
        if event is NEED_DATA:
            return events
        assert isinstance(event, (Frame, FrameError))
        events.append(event)


def feed_all(decoder: FrameDecoder, data: bytes, step: int | None = None) -> list[Frame | FrameError]:
    if step is None:
        decoder.feed(data)
        return drain(decoder)
    events: list[Frame | FrameError] = []
    for i in range(0, len(data), step):
        decoder.feed(data[i : i + step])
        events.extend(drain(decoder))
    return events


def test_getting_started_packet_decodes() -> None:
    assert feed_all(FrameDecoder(), DOC_PACKET) == [Frame(0, b'{"test": 1}')]


def test_encode_frame_matches_the_design_example() -> None:
    assert encode_frame(b'{"test": 1}', 0) == DOC_PACKET


@pytest.mark.parametrize("step", [None, 1, 2, 7])
def test_three_frames_whole_or_byte_by_byte(step: int | None) -> None:
    stream = encode_frame(b"a", 0) + encode_frame(b"", 1) + encode_frame(b"x" * 300, 0)
    events = feed_all(FrameDecoder(), stream, step)
    assert events == [Frame(0, b"a"), Frame(1, b""), Frame(0, b"x" * 300)]


def test_trailing_partial_frame_waits_for_more() -> None:
    decoder = FrameDecoder()
    second = encode_frame(b"second", 0)
    events = feed_all(decoder, DOC_PACKET + second[:5])
    assert events == [Frame(0, b'{"test": 1}')]
    assert decoder.in_frame and decoder.buffered == 5
    assert feed_all(decoder, second[5:]) == [Frame(0, b"second")]
    assert not decoder.in_frame and decoder.buffered == 0


@pytest.mark.parametrize("header_size", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("byteorder", ["big", "little"])
def test_header_sizes_and_byteorders(header_size: int, byteorder: str) -> None:
    order = check_byteorder(byteorder)
    data = encode_frame(b"payload", 1, header_size, order)
    assert len(data) == header_size + 2 + 7
    assert feed_all(FrameDecoder(header_size, order), data, 1) == [Frame(1, b"payload")]


@pytest.mark.parametrize("bad", [0, 9, -1])
def test_header_size_out_of_range_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="header_size"):
        FrameDecoder(header_size=bad)


def test_too_large_is_rejected_from_the_header_alone() -> None:
    decoder = FrameDecoder(max_packet_size=100)
    decoder.feed((101).to_bytes(4, "big"))  # no version byte, no body yet
    event = decoder.next_event()
    assert isinstance(event, FrameError)
    assert (event.code, event.fatal) == (ERR_PAYLOAD_TOO_LARGE, True)
    decoder.feed(b"x" * 10_000)  # ignored after a fatal error: nothing is buffered
    assert decoder.buffered == 0 and decoder.next_event() is NEED_DATA


def test_exactly_max_size_is_accepted() -> None:
    decoder = FrameDecoder(max_packet_size=12)
    assert feed_all(decoder, encode_frame(b"x" * 10, 0)) == [Frame(0, b"x" * 10)]


@pytest.mark.parametrize("length", [0, 1])
def test_length_under_two_is_invalid_but_framing_goes_on(length: int) -> None:
    stream = length.to_bytes(4, "big") + b"\x16" * length + DOC_PACKET
    events = feed_all(FrameDecoder(), stream, 1)
    assert isinstance(events[0], FrameError) and events[0].code == ERR_HEADER_INVALID
    assert not events[0].fatal
    assert events[1:] == [Frame(0, b'{"test": 1}')]


@pytest.mark.parametrize("step", [None, 1, 3])
def test_unknown_version_is_skipped_without_buffering(step: int | None) -> None:
    bad = (2 + 5000).to_bytes(4, "big") + b"\x15\x01" + b"z" * 5000
    decoder = FrameDecoder()
    events = feed_all(decoder, bad + DOC_PACKET, step)
    assert len(events) == 2
    error = events[0]
    assert isinstance(error, FrameError)
    assert error.code == ERR_HEADER_INVALID and "Protocol-Version 21" in error.detail
    assert error.encoding == 1  # the encoding byte was valid: the reply can use it
    assert events[1] == Frame(0, b'{"test": 1}')


def test_skipped_body_is_never_buffered() -> None:
    decoder = FrameDecoder()
    decoder.feed((2 + 50_000).to_bytes(4, "big") + b"\x16\x09")
    event = decoder.next_event()
    assert isinstance(event, FrameError) and event.encoding is None
    for _ in range(49):
        decoder.feed(b"z" * 1000)
        assert decoder.buffered == 0
    decoder.feed(b"z" * 1000 + DOC_PACKET)
    assert drain(decoder) == [Frame(0, b'{"test": 1}')]


def test_many_frames_in_one_feed_compact_the_buffer() -> None:
    frames = [encode_frame(b"%d" % i, 0) for i in range(20_000)]
    decoder = FrameDecoder()
    decoder.feed(b"".join(frames) + frames[0][:3])
    events = drain(decoder)
    assert len(events) == 20_000
    assert decoder.buffered == 3


def test_client_core_and_server_decoder_back_to_back() -> None:
    """A client core's frames decode on the server side and the server's replies on the client."""
    client = ClientCore(encoding="ziproto", header_size=2, byteorder="little")
    server = FrameDecoder(2, "little")
    wire = client.frame({"a": 1}) + client.frame({"b": [1, 2]}, encoding="json")
    events = feed_all(server, wire, 1)
    assert [(e.encoding, e.payload) for e in events if isinstance(e, Frame)] == [
        (1, b"\x81\xa1a\x01"),
        (0, b'{"b":[1,2]}'),
    ]
    reply = encode_frame(b'{"ok":true}', 0, 2, "little")
    for byte in reply:
        assert client.next_frame() is None
        client.receive_data(bytes([byte]))
    frame = client.next_frame()
    assert frame is not None and client.decode(frame) == {"ok": True}
    assert client.raw(frame) == reply
