"""docs/protocol.md's byte-level examples, checked against the implementation.

Each ```frame block holds frames; a frame is a ``#`` line (direction, framing, and for a
refused frame the error it gets) and one line per field: hex bytes, two spaces, the
field's name and value (payload lines may continue on lines of hex alone). For every
frame: each line's bytes are the field it names, asyncapy's decoder reads the frame as
those fields, and its encoder writes the same bytes back. A refused frame is fed after a
frame that fixes the connection's version, and must get the error the line names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from asyncapy.wire.codecs import get_codec
from asyncapy.wire.protocol import (
    KIND_NAMES,
    SENT_BY_CLIENT,
    SENT_BY_SERVER,
    Frame,
    FrameDecoder,
    FrameError,
    V2Frame,
    check_byteorder,
    encode_frame,
    encode_reply,
    encode_request,
    encode_v2,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
BLOCK = re.compile(r"^```frame\n(.*?)^```$", re.S | re.M)
HEX = re.compile(r"^((?:[0-9a-f]{2} )*[0-9a-f]{2})?\s*(?:  (\S.*))?$")
FRAMING = re.compile(r"\(header_size (\d), (big|little)-endian\)")
REFUSED = re.compile(r"refused, (ERR_[A-Z_]+)(?: on Stream-Id (\d+))?")
CONTEXT = re.compile(r"on a (v1|v2) connection")
#: Fields in wire order and how many bytes each has (Content-Length: header_size).
V1_FIELDS = ["Content-Length", "Protocol-Version", "Content-Encoding", "payload"]
V2_FIELDS = ["Content-Length", "Protocol-Version", "Content-Encoding", "Kind", "Stream-Id", "Deadline-Ms", "payload"]


@dataclass
class DocFrame:
    comment: str
    fields: list[tuple[str, str, bytearray]] = field(default_factory=list)

    @property
    def data(self) -> bytes:
        return b"".join(bytes(raw) for _, _, raw in self.fields)

    @property
    def header_size(self) -> int:
        return int(self._framing.group(1))

    @property
    def byteorder(self) -> str:
        return self._framing.group(2)

    @property
    def _framing(self) -> re.Match[str]:
        match = FRAMING.search(self.comment)
        assert match, f"say the framing, as '(header_size 4, big-endian)': {self.comment}"
        return match

    @property
    def from_client(self) -> bool:
        assert ("client → server" in self.comment) != ("server → client" in self.comment), self.comment
        return "client → server" in self.comment


def parse(text: str) -> list[DocFrame]:
    frames: list[DocFrame] = []
    for line in text.splitlines():
        if line.startswith("#"):
            frames.append(DocFrame(line[1:].strip()))
            continue
        match = HEX.match(line)
        assert match and (match.group(1) or match.group(2)), f"not a field line: {line!r}"
        raw = bytearray(bytes.fromhex(match.group(1) or ""))
        annotation = match.group(2)
        frame = frames[-1]
        if annotation is None:  # a payload continues
            assert frame.fields and frame.fields[-1][0] == "payload", line
            frame.fields[-1][2].extend(raw)
            continue
        name, _, value = annotation.partition(" ")
        frame.fields.append((name, value, raw))
    return frames


def doc_frames() -> list[DocFrame]:
    frames = [frame for block in BLOCK.findall(DOC.read_text()) for frame in parse(block)]
    assert len(frames) >= 20, "the examples went missing"
    return frames


def payload_value(value: str, raw: bytes) -> None:
    """The payload line's value: ``(JSON) text`` (the exact bytes), ``(ZiProto) json``, ``(empty)``."""
    kind, _, text = value.partition(" ")
    if kind == "(empty)":
        assert raw == b""
    elif kind == "(JSON)":
        assert raw == text.encode(), f"{raw!r} is not {text!r}"
    else:
        assert kind == "(ZiProto)", value
        assert get_codec("ziproto").decode(raw) == json.loads(text)


def check_fields(frame: DocFrame) -> None:
    """Each line's bytes are the value its annotation names."""
    names = [name for name, _, _ in frame.fields]
    version = int(frame.fields[1][1])
    assert names == (V2_FIELDS if version == 23 else V1_FIELDS), names
    for name, value, raw in frame.fields:
        number = value.split(" ")[0]
        if name == "Content-Length":
            order = check_byteorder(frame.byteorder)
            assert raw == int(number).to_bytes(frame.header_size, order)
            assert int(number) == len(frame.data) - frame.header_size
        elif name in ("Stream-Id", "Deadline-Ms"):
            assert raw == int(number).to_bytes(4, "big"), name
        elif name == "payload":
            payload_value(value, bytes(raw))
        else:
            assert raw == bytes([int(number)]), name
            if name == "Content-Encoding":
                assert value == f"{number} ({'JSON' if number == '0' else 'ZiProto'})"
            if name == "Kind":
                assert value == f"{number} ({KIND_NAMES[int(number)]})"


def decoder_for(frame: DocFrame) -> FrameDecoder[Any]:
    order = check_byteorder(frame.byteorder)
    return FrameDecoder(frame.header_size, order, kinds=SENT_BY_CLIENT if frame.from_client else SENT_BY_SERVER)


def read(decoder: FrameDecoder[Any], data: bytes) -> list[Any]:
    decoder.feed(data)
    events = []
    for raw in decoder.pull(100):
        events.append(raw if isinstance(raw, FrameError) else Frame(*raw) if len(raw) == 2 else V2Frame(*raw))
    return events


def check_accepted(frame: DocFrame) -> None:
    values = {name: int(value.split(" ")[0]) for name, value, _ in frame.fields if name != "payload"}
    payload = bytes(frame.fields[-1][2])
    order = check_byteorder(frame.byteorder)
    [event] = read(decoder_for(frame), frame.data)
    if values["Protocol-Version"] == 22:
        assert event == Frame(values["Content-Encoding"], payload)
        assert encode_frame(payload, event.encoding, frame.header_size, order) == frame.data
        assert FrameDecoder(frame.header_size, order).receive(frame.data, 1) == [(event.encoding, payload)]  # v1-only too
        return
    kind, stream_id, deadline = values["Kind"], values["Stream-Id"], values["Deadline-Ms"]
    assert event == V2Frame(values["Content-Encoding"], kind, stream_id, deadline, payload)
    assert encode_v2(kind, stream_id, payload, event.encoding, deadline, frame.header_size, order) == frame.data


def check_refused(frame: DocFrame, refused: re.Match[str]) -> None:
    context = CONTEXT.search(frame.comment)
    assert context, f"say which connection the frame is refused on: {frame.comment}"
    order = check_byteorder(frame.byteorder)
    decoder = decoder_for(frame)
    first = encode_frame(b"{}", 0, frame.header_size, order)
    if context.group(1) == "v2":
        encode = encode_request if frame.from_client else encode_reply
        first = encode(1, b"{}", 0, header_size=frame.header_size, byteorder=order)
    [_, error] = read(decoder, first + frame.data)
    assert isinstance(error, FrameError) and not error.fatal
    assert error.code == refused.group(1)
    assert error.version == (23 if context.group(1) == "v2" else 22)
    if refused.group(2) is not None:
        assert error.stream_id == int(refused.group(2))
    assert read(decoder, first) != [] and decoder.buffered == 0  # skipped whole: the framing goes on


@pytest.mark.parametrize("frame", doc_frames(), ids=lambda f: f.comment[:60])
def test_each_example_is_what_the_implementation_writes_and_reads(frame: DocFrame) -> None:
    check_fields(frame)
    refused = REFUSED.search(frame.comment)
    if refused is None:
        check_accepted(frame)
    else:
        check_refused(frame, refused)


def test_the_examples_cover_every_kind_both_versions_and_both_byteorders() -> None:
    frames = doc_frames()
    kinds = {f.fields[3][1] for f in frames if f.fields[1][1] == "23"}
    assert kinds == {f"{k} ({name})" for k, name in enumerate(KIND_NAMES)}
    assert {f.fields[1][1] for f in frames} == {"22", "23"}
    assert {f.byteorder for f in frames} == {"big", "little"}
    assert any(REFUSED.search(f.comment) for f in frames)


def test_the_getting_started_packet_is_quoted_exactly() -> None:
    text = DOC.read_text()
    assert "`b'\\x00\\x00\\x00\\r\\x16\\x00{\"test\": 1}'`" in text
    [first] = parse(BLOCK.findall(text)[0])
    assert first.data == b'\x00\x00\x00\r\x16\x00{"test": 1}'
