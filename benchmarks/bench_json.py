"""JSON decoding: asyncapy's codec (exact big integers) against plain ``orjson.loads``.

orjson reads an integer beyond 64 bits as a rounded float; the codec decodes with
msgspec, which keeps it exact. This prints both on the same payloads, in the same
process, best of ``--repeat`` runs, and the ratio (codec / orjson).

    python benchmarks/bench_json.py [--number 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from asyncapy.wire.codecs import get_codec  # noqa: E402

PAYLOADS = {
    "echo {'test': 1}": b'{"test": 1}',
    "5-field map": orjson.dumps({"id": 123456, "name": "alice", "email": "alice@example.com", "age": 33, "tags": ["a", "b"]}),
    "10 KiB nested": orjson.dumps({"items": [{"id": i, "name": "x" * 20, "v": i * 1.5} for i in range(200)]}),
    "one 2**70 integer": b'{"n": 1180591620717411303425}',
}


def best(fn: object, data: bytes, number: int, repeat: int) -> float:
    times = timeit.repeat(lambda: fn(data), number=number, repeat=repeat)  # type: ignore[operator]
    return min(times) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    decode = get_codec("json").decode
    print(f"# ns per decode, best of {args.repeat} x {args.number}, python {sys.version.split()[0]}")
    print(f"{'payload':22} {'orjson':>9} {'asyncapy':>9} {'ratio':>6}")
    for name, data in PAYLOADS.items():
        number = max(1, args.number * 20 // max(len(data), 20))
        base = best(orjson.loads, data, number, args.repeat)
        ours = best(decode, data, number, args.repeat)
        print(f"{name:22} {base:9.0f} {ours:9.0f} {ours / base:6.2f}")


if __name__ == "__main__":
    main()
