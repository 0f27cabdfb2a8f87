"""atheris harness: each codec decodes bytes to a value or raises DecodeError, nothing else.

Not a CI dependency. Run (bounded):
    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_codecs.py -atheris_runs=2000000 -max_total_time=120
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from asyncapy.wire.codecs import DecodeError, get_codec

CODECS = (get_codec("json"), get_codec("ziproto"))


def test_one_input(data: bytes) -> None:
    if not data:
        return
    codec = CODECS[data[0] & 1]
    try:
        codec.decode(data[1:])
    except DecodeError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
