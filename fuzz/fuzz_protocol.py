"""atheris harness: FrameDecoder yields frames or FrameErrors, never another exception.

Each input picks a v1-only decoder or a two-version one (a server's or a client's Kinds).

Not a CI dependency. Run (bounded):
    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_protocol.py -atheris_runs=2000000 -max_total_time=120
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from asyncapy.wire.protocol import NEED_DATA, SENT_BY_CLIENT, SENT_BY_SERVER, Frame, FrameDecoder, FrameError, V2Frame

KINDS = (None, SENT_BY_CLIENT, SENT_BY_SERVER)

#: Small limit so fuzzed lengths land on both sides of it.
MAX_PACKET = 256
#: A decoder that never asks for more data is a bug; stop there instead of hanging.
MAX_EVENTS = 100_000


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    header_size = fdp.ConsumeIntInRange(1, 8)
    byteorder = "big" if fdp.ConsumeBool() else "little"
    kinds = KINDS[fdp.ConsumeIntInRange(0, 2)]
    decoder = FrameDecoder(header_size, byteorder, MAX_PACKET, kinds=kinds)
    while fdp.remaining_bytes():
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
        decoder.feed(chunk)
        for _ in range(MAX_EVENTS):
            event = decoder.next_event()
            if event is NEED_DATA:
                break
            assert isinstance(event, (Frame, V2Frame, FrameError)), event
            assert kinds is not None or not isinstance(event, V2Frame), event
        else:
            raise AssertionError("the decoder never asked for more data")
        assert decoder.buffered <= header_size + MAX_PACKET + 64


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
