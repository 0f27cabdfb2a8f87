"""atheris harness: ProxyHeaderDecoder yields a header, an error or NEED_DATA, never another exception.

Not a CI dependency. Run (bounded):
    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_proxy.py -atheris_runs=2000000 -max_total_time=120
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from asyncapy.wire.protocol import NEED_DATA
    from asyncapy.wire.proxy import (
        V1_MAX_LENGTH, V2_FIXED_LENGTH, V2_MAX_BODY, V2_SIGNATURE, ProxyHeader, ProxyHeaderDecoder, ProxyHeaderError,
    )  # fmt: skip

#: The most the decoder may hold: the longest header it accepts, plus one chunk.
BOUND = max(V1_MAX_LENGTH, V2_FIXED_LENGTH + V2_MAX_BODY) + 64


#: Starts the fuzzer may give a stream, so that it need not guess the signatures first.
PREFIXES = (b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN", V2_SIGNATURE, V2_SIGNATURE + b"\x21\x11")


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    decoder = ProxyHeaderDecoder()
    pending = PREFIXES[fdp.ConsumeIntInRange(0, len(PREFIXES) - 1)]
    while fdp.remaining_bytes():
        event = decoder.receive(pending + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)))
        pending = b""
        if event is NEED_DATA:
            assert decoder.buffered <= BOUND
            continue
        assert isinstance(event, (ProxyHeader, ProxyHeaderError)), event
        if isinstance(event, ProxyHeader):
            for address in (event.source, event.destination):
                assert address is None or 0 <= address[1] <= 65535
        return


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
