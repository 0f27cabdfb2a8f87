"""AsyncAProto v2 in the sans-IO decoder: whole buffers, one byte at a time, trailing data,
the version a connection's first frame fixes, and every header the decoder refuses."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from asyncapy.wire.errors import ERR_HEADER_INVALID, ERR_PAYLOAD_TOO_LARGE
from asyncapy.wire.protocol import (
    CANCEL,
    END,
    ITEM,
    MAX_DEADLINE_MS,
    MAX_STREAM_ID,
    NEED_DATA,
    PUSH,
    REPLY,
    REQUEST,
    SENT_BY_CLIENT,
    SENT_BY_SERVER,
    V2_TAIL,
    Frame,
    FrameDecoder,
    FrameError,
    V2Frame,
    check_byteorder,
    encode_cancel,
    encode_end,
    encode_frame,
    encode_item,
    encode_push,
    encode_reply,
    encode_request,
    encode_v2,
    v2_header,
    v2_header_packer,
)

Event = Frame | V2Frame | FrameError

DOC_V1 = b'\x00\x00\x00\r\x16\x00{"test": 1}'
#: REQUEST on Stream-Id 1, Deadline-Ms 1500, JSON {"test": 1}.
DOC_V2 = bytes.fromhex("00 00 00 16 17 00 00 00 00 00 01 00 00 05 dc") + b'{"test": 1}'


def drain(decoder: FrameDecoder[Any]) -> list[Event]:
    events: list[Event] = []
    for _ in range(100_000):
        event = decoder.next_event()
        if event is NEED_DATA:
            return events
        assert isinstance(event, (Frame, V2Frame, FrameError))
        events.append(event)
    raise AssertionError("the decoder never asked for more data")


def feed_all(decoder: FrameDecoder[Any], data: bytes, step: int | None = None) -> list[Event]:
    if step is None:
        decoder.feed(data)
        return drain(decoder)
    events: list[Event] = []
    for i in range(0, len(data), step):
        decoder.feed(data[i : i + step])
        events.extend(drain(decoder))
    return events


def server_decoder(header_size: int = 4, byteorder: str = "big", max_packet_size: int = 1 << 20) -> FrameDecoder[Any]:
    return FrameDecoder(header_size, check_byteorder(byteorder), max_packet_size, kinds=SENT_BY_CLIENT)


def client_decoder() -> FrameDecoder[Any]:
    return FrameDecoder(kinds=SENT_BY_SERVER)


def test_the_documented_request_encodes_and_decodes() -> None:
    assert encode_request(1, b'{"test": 1}', 0, 1500) == DOC_V2
    assert feed_all(server_decoder(), DOC_V2) == [V2Frame(0, REQUEST, 1, 1500, b'{"test": 1}')]


CLIENT_STREAM = (
    encode_request(1, b'{"a": 1}', 0, 250)
    + encode_request(2, b"\x81\xa1b\x02", 1)
    + encode_cancel(1)
    + encode_request(MAX_STREAM_ID, b"x" * 300, 0, MAX_DEADLINE_MS)
)
CLIENT_EVENTS = [
    V2Frame(0, REQUEST, 1, 250, b'{"a": 1}'),
    V2Frame(1, REQUEST, 2, 0, b"\x81\xa1b\x02"),
    V2Frame(0, CANCEL, 1, 0, b""),
    V2Frame(0, REQUEST, MAX_STREAM_ID, MAX_DEADLINE_MS, b"x" * 300),
]
SERVER_STREAM = (
    encode_reply(2, b'{"ok": true}', 0)
    + encode_item(1, b'{"n": 1}', 0)
    + encode_push(b'{"news": 1}', 1)
    + encode_end(1)
    + encode_reply(0, b'{"status": "failure", "error": "ERR_TIMED_OUT"}', 0)
    + encode_end(3, b'{"status": "failure", "error": "ERR_INTERNAL"}', 0)
)
SERVER_EVENTS = [
    V2Frame(0, REPLY, 2, 0, b'{"ok": true}'),
    V2Frame(0, ITEM, 1, 0, b'{"n": 1}'),
    V2Frame(1, PUSH, 0, 0, b'{"news": 1}'),
    V2Frame(0, END, 1, 0, b""),
    V2Frame(0, REPLY, 0, 0, b'{"status": "failure", "error": "ERR_TIMED_OUT"}'),
    V2Frame(0, END, 3, 0, b'{"status": "failure", "error": "ERR_INTERNAL"}'),
]


@pytest.mark.parametrize("step", [None, 1, 2, 7, 11])
def test_every_kind_whole_or_in_pieces(step: int | None) -> None:
    server = server_decoder()
    assert feed_all(server, CLIENT_STREAM, step) == CLIENT_EVENTS
    assert server.version == 23 and not server.in_frame and server.buffered == 0
    client = client_decoder()
    assert feed_all(client, SERVER_STREAM, step) == SERVER_EVENTS
    assert client.version == 23


@pytest.mark.parametrize("cut", [1, 4, 5, 14, 15, 20])
def test_trailing_partial_v2_frame_waits_for_more(cut: int) -> None:
    decoder = server_decoder()
    second = encode_request(9, b'{"second": 2}', 0, 7)
    assert feed_all(decoder, DOC_V2 + second[:cut]) == [V2Frame(0, REQUEST, 1, 1500, b'{"test": 1}')]
    assert decoder.in_frame and decoder.buffered == cut
    assert feed_all(decoder, second[cut:]) == [V2Frame(0, REQUEST, 9, 7, b'{"second": 2}')]
    assert not decoder.in_frame and decoder.buffered == 0


def test_batched_receive_slices_whole_frames_and_keeps_the_rest() -> None:
    """The server's calls: ``receive(read, limit)``, then ``pull`` what the limit left."""
    decoder = server_decoder()
    read = CLIENT_STREAM + DOC_V2[:5]
    first = decoder.receive(read, 3)
    assert first == [tuple(e) for e in CLIENT_EVENTS[:3]]
    assert decoder.pull(10) == [tuple(CLIENT_EVENTS[3])]
    assert decoder.pull(10) == [] and decoder.buffered == 5
    assert decoder.receive(DOC_V2[5:], 10) == [(0, REQUEST, 1, 1500, b'{"test": 1}')]
    assert decoder.receive(DOC_V2, 10) == [(0, REQUEST, 1, 1500, b'{"test": 1}')]  # one whole frame per read


@pytest.mark.parametrize("header_size", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("byteorder", ["big", "little"])
def test_v2_header_sizes_and_byteorders(header_size: int, byteorder: str) -> None:
    order = check_byteorder(byteorder)
    data = encode_request(0x01020304, b"payload", 1, 0x0A0B0C0D, header_size, order)
    assert len(data) == header_size + V2_TAIL + 7
    assert data[:header_size] == (V2_TAIL + 7).to_bytes(header_size, order)
    # Stream-Id and Deadline-Ms are big-endian whatever the Content-Length byteorder.
    assert data[header_size:] == b"\x17\x01\x00\x01\x02\x03\x04\x0a\x0b\x0c\x0dpayload"
    events = feed_all(server_decoder(header_size, order), data, 1)
    assert events == [V2Frame(1, REQUEST, 0x01020304, 0x0A0B0C0D, b"payload")]


@pytest.mark.parametrize("header_size", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("byteorder", ["big", "little"])
def test_the_header_packer_matches_the_checked_encoder(header_size: int, byteorder: str) -> None:
    order = check_byteorder(byteorder)
    pack = v2_header_packer(header_size, order)
    assert pack(V2_TAIL + 3, 23, 1, REPLY, 77, 0) == v2_header(3, 1, REPLY, 77, 0, header_size, order)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: encode_request(0, b"", 0), "non-zero Stream-Id"),
        (lambda: encode_cancel(0), "CANCEL needs"),
        (lambda: encode_item(0, b"", 0), "ITEM needs"),
        (lambda: encode_end(0), "END needs"),
        (lambda: encode_v2(6, 1, b"", 0), "Kind is one of"),
        (lambda: encode_v2(REPLY, MAX_STREAM_ID + 1, b"", 0), "Stream-Id is 0 to"),
        (lambda: encode_v2(REPLY, -1, b"", 0), "Stream-Id is 0 to"),
        (lambda: encode_request(1, b"", 0, MAX_DEADLINE_MS + 1), "Deadline-Ms is 0 to"),
        (lambda: encode_v2(REPLY, 1, b"", 256), "Content-Encoding is one byte"),
    ],
)
def test_encoders_refuse_fields_out_of_range(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_a_frame_too_long_for_header_size_is_an_overflow() -> None:
    with pytest.raises(OverflowError):
        encode_request(1, b"x" * 250, 0, header_size=1)


# -- the version a connection speaks ---------------------------------------------------------


@pytest.mark.parametrize("step", [None, 1])
def test_a_v2_frame_on_a_v1_connection_is_refused_with_its_stream_id(step: int | None) -> None:
    decoder = server_decoder()
    events = feed_all(decoder, DOC_V1 + encode_request(42, b"z" * 5000, 1) + DOC_V1, step)
    assert decoder.version == 22
    assert events[0] == Frame(0, b'{"test": 1}') and events[2] == Frame(0, b'{"test": 1}')
    error = events[1]
    assert isinstance(error, FrameError)
    assert (error.code, error.fatal, error.version, error.stream_id, error.encoding) == (ERR_HEADER_INVALID, False, 22, 42, 1)
    assert "Protocol-Version 23 on a connection that speaks 22" in error.detail


@pytest.mark.parametrize("step", [None, 1])
def test_a_v1_frame_on_a_v2_connection_is_refused_on_stream_zero(step: int | None) -> None:
    decoder = server_decoder()
    events = feed_all(decoder, DOC_V2 + DOC_V1 + DOC_V2, step)
    assert decoder.version == 23
    assert events[0] == events[2] == V2Frame(0, REQUEST, 1, 1500, b'{"test": 1}')
    error = events[1]
    assert isinstance(error, FrameError)
    assert (error.code, error.version, error.stream_id, error.encoding) == (ERR_HEADER_INVALID, 23, 0, 0)
    assert "Protocol-Version 22 on a connection that speaks 23" in error.detail


def test_the_first_frame_with_a_known_version_fixes_it_even_when_refused() -> None:
    """An unknown version does not fix it; a v2 header with a bad encoding does (the reply is v2)."""
    decoder = server_decoder()
    garbage = (2 + 3).to_bytes(4, "big") + b"\x63\x00abc"
    bad_v2 = encode_v2(REQUEST, 5, b"{}", 0)[:5] + b"\x07" + encode_v2(REQUEST, 5, b"{}", 0)[6:]
    events = feed_all(decoder, garbage + bad_v2 + DOC_V1)
    assert [type(e) for e in events] == [FrameError, FrameError, FrameError]
    unknown, encoding, mismatch = events
    assert isinstance(unknown, FrameError) and isinstance(encoding, FrameError) and isinstance(mismatch, FrameError)
    assert unknown.detail == "unknown Protocol-Version 99 (expected 22)" and unknown.version == 22  # as v1 says it
    assert "unknown Content-Encoding 7" in encoding.detail
    assert (encoding.version, encoding.stream_id, encoding.encoding) == (23, 5, None)
    assert mismatch.version == 23 and decoder.version == 23


def test_before_the_first_frame_the_version_is_unknown() -> None:
    decoder = server_decoder()
    assert decoder.version is None
    decoder.feed(DOC_V2[:14])  # the whole header but not the payload: nothing decided yet
    assert decoder.next_event() is NEED_DATA and decoder.version is None
    assert FrameDecoder().version == 22  # a v1-only decoder


def test_a_v1_only_decoder_treats_23_as_an_unknown_version_as_before() -> None:
    events = feed_all(FrameDecoder(), DOC_V2 + DOC_V1, 1)
    error = events[0]
    assert isinstance(error, FrameError)
    assert error == FrameError(ERR_HEADER_INVALID, "unknown Protocol-Version 23 (expected 22)", 0, False)
    assert events[1:] == [Frame(0, b'{"test": 1}')]


# -- headers a v2 connection refuses (the framing goes on) ----------------------------------


def _refused(decoder: FrameDecoder[Any], frame: bytes) -> FrameError:
    """Feed ``frame`` then a good request, byte by byte: the refusal, and the request still read."""
    events = feed_all(decoder, DOC_V2 + frame + DOC_V2, 1)
    assert events[0] == events[2] == V2Frame(0, REQUEST, 1, 1500, b'{"test": 1}'), events
    error = events[1]
    assert isinstance(error, FrameError) and error.code == ERR_HEADER_INVALID and not error.fatal
    assert error.version == 23
    return error


@pytest.mark.parametrize(
    ("kind", "stream_id", "receiver", "detail"),
    [
        (REPLY, 3, "server", "Kind 1 (REPLY) is not sent to this side"),
        (PUSH, 0, "server", "Kind 5 (PUSH) is not sent to this side"),
        (REQUEST, 3, "client", "Kind 0 (REQUEST) is not sent to this side"),
        (9, 3, "server", "unknown Kind 9"),
        (REQUEST, 0, "server", "a REQUEST needs a non-zero Stream-Id"),
        (CANCEL, 0, "server", "a CANCEL needs a non-zero Stream-Id"),
        (ITEM, 0, "client", "an ITEM needs"),
        (END, 0, "client", "an END needs"),
        (PUSH, 8, "client", "a PUSH has Stream-Id 0, not 8"),
    ],
)
def test_kinds_and_stream_ids_a_side_does_not_take(kind: int, stream_id: int, receiver: str, detail: str) -> None:
    frame = (V2_TAIL + 2).to_bytes(4, "big") + struct.pack(">BBBII", 23, 0, kind, stream_id, 0) + b"{}"
    if receiver == "server":
        error = _refused(server_decoder(), frame)
    else:
        decoder = client_decoder()
        ok = encode_reply(1, b"{}", 0)
        events = feed_all(decoder, ok + frame + ok, 1)
        assert events[0] == events[2] == V2Frame(0, REPLY, 1, 0, b"{}")
        error = events[1]  # type: ignore[assignment]
        assert isinstance(error, FrameError)
    assert detail.replace("an ", "a ") in error.detail.replace("an ", "a ")
    assert error.stream_id == stream_id and error.encoding == 0


@pytest.mark.parametrize("length", [2, 5, 10])
def test_content_length_under_eleven_on_v2_is_refused_on_stream_zero(length: int) -> None:
    frame = length.to_bytes(4, "big") + b"\x17\x00" + b"\x00" * (length - 2)
    error = _refused(server_decoder(), frame)
    assert f"Content-Length {length} is under 11" in error.detail and error.stream_id == 0


@pytest.mark.parametrize("length", [0, 1])
def test_content_length_under_two_on_v2_is_refused(length: int) -> None:
    error = _refused(server_decoder(), length.to_bytes(4, "big") + b"\x17" * length)
    assert f"Content-Length {length} is under 2" in error.detail and error.stream_id == 0


def test_a_refused_v2_body_is_never_buffered() -> None:
    decoder = server_decoder()
    decoder.feed(DOC_V2)
    drain(decoder)
    frame = (V2_TAIL + 50_000).to_bytes(4, "big") + struct.pack(">BBBII", 23, 9, REQUEST, 3, 0)
    decoder.feed(frame)
    [error] = drain(decoder)
    assert isinstance(error, FrameError) and error.stream_id == 3 and error.encoding is None
    for _ in range(49):
        decoder.feed(b"z" * 1000)
        assert decoder.buffered == 0
    decoder.feed(b"z" * 1000 + DOC_V2)
    assert drain(decoder) == [V2Frame(0, REQUEST, 1, 1500, b'{"test": 1}')]


def test_too_large_on_v2_is_fatal_from_the_length_alone() -> None:
    decoder = server_decoder(max_packet_size=100)
    decoder.feed(DOC_V2 + (101).to_bytes(4, "big"))
    events = drain(decoder)
    error = events[-1]
    assert isinstance(error, FrameError)
    assert (error.code, error.fatal, error.version, error.stream_id) == (ERR_PAYLOAD_TOO_LARGE, True, 23, 0)
    decoder.feed(b"x" * 10_000)
    assert decoder.buffered == 0 and decoder.next_event() is NEED_DATA


def test_too_large_before_any_frame_is_answered_in_v1() -> None:
    decoder = server_decoder(max_packet_size=100)
    decoder.feed((101).to_bytes(4, "big"))
    error = decoder.next_event()
    assert isinstance(error, FrameError) and (error.code, error.version) == (ERR_PAYLOAD_TOO_LARGE, 22)


def test_exactly_max_size_is_accepted_on_v2() -> None:
    decoder = server_decoder(max_packet_size=V2_TAIL + 10)
    assert feed_all(decoder, encode_request(1, b"x" * 10, 0)) == [V2Frame(0, REQUEST, 1, 0, b"x" * 10)]


def test_many_v2_frames_in_one_feed_compact_the_buffer() -> None:
    frames = [encode_request(i + 1, b"%d" % i, 0) for i in range(20_000)]
    decoder = server_decoder()
    decoder.feed(b"".join(frames) + frames[0][:3])
    events = drain(decoder)
    assert len(events) == 20_000 and events[-1] == V2Frame(0, REQUEST, 20_000, 0, b"19999")
    assert decoder.buffered == 3


def test_kinds_must_be_v2_kinds() -> None:
    with pytest.raises(ValueError, match="kinds must be v2 Kinds"):
        FrameDecoder(kinds=frozenset({7}))


def test_an_unknown_version_on_a_v2_connection_is_answered_in_v2() -> None:
    decoder = server_decoder()
    garbage = (2 + 3).to_bytes(4, "big") + b"\x63\x01abc"
    error = _refused(decoder, garbage)
    assert error.detail == "unknown Protocol-Version 99 (expected 23)"
    assert (error.stream_id, error.encoding) == (0, 1)
