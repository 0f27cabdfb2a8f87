"""The sans-IO decoder alone, against an older revision of it: ``python benchmarks/bench_protocol.py``.

The v1 rows decode the same bytes with this tree's ``asyncapy/protocol.py`` and with the
one of ``--base REV`` (default ``main``; read with ``git show``, loaded in the same
process), interleaved repetition by repetition so that a noisy neighbour hurts both
alike, and print nanoseconds per call and the ratio new / base (1.00: as fast). The v2
rows (this tree only) decode the same payloads as v2 frames on a two-version decoder;
their ratio is to this tree's v1 row of the same shape.

Rows: ``receive 1`` (a read holding one whole frame, the server's common read and the
client's reply), ``receive 16`` (16 pipelined frames in one read), ``split`` (a frame
in two reads: ``receive`` then ``receive``), ``next_event`` (``feed`` + ``next_event``).

Options: ``--calls N`` (200,000 per row and repetition), ``--repeat N`` (7; the best is
kept), ``--base REV``.

For differences too small to time, count instructions: ``--loop CASE`` (``receive1``,
``receive16``, ``split``, ``next_event``) runs ``--calls`` calls of that v1 case on this
tree's decoder and nothing else, so ``valgrind --tool=callgrind
--callgrind-out-file=/dev/null python benchmarks/bench_protocol.py --loop CASE --calls N``
for two values of N gives instructions per call (run it in ``git archive REV`` unpacked
elsewhere for the reference; results/protocol-v2-decoder.md).
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from asyncapy import protocol  # noqa: E402

PAYLOAD = b'{"name": "Ada Lovelace", "age": 36, "email": "ada@example.org", "score": 9.5, "active": true}'


#: Where the framing lived: in the layer folder since the layout, flat before (there now a re-export).
BASE_PATHS = ("asyncapy/wire/protocol.py", "asyncapy/protocol.py")


def load_base(rev: str) -> types.ModuleType:
    """The framing module as it is at ``rev``, loaded next to this tree's (its relative
    imports resolve in this tree's package) as ``<package>._protocol_base``."""
    for path in BASE_PATHS:
        shown = subprocess.run(["git", "-C", str(HERE.parent), "show", f"{rev}:{path}"], capture_output=True, text=True)
        if shown.returncode == 0:
            source = shown.stdout
            break
    else:
        raise SystemExit(f"no framing module at {rev} ({' or '.join(BASE_PATHS)})")
    package = protocol.FrameDecoder.__module__.rpartition(".")[0]
    module = types.ModuleType(f"{package}._protocol_base")
    module.__package__ = package
    module.__file__ = f"<{rev}:{path}>"
    sys.modules[module.__name__] = module  # dataclasses look their module up while the class is made
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def v1_frame(mod: Any) -> bytes:
    return bytes(mod.encode_frame(PAYLOAD, 0))


def v2_frame(stream_id: int = 1) -> bytes:
    return protocol.encode_request(stream_id, PAYLOAD, 0, 1000)


Case = Callable[[], Callable[[int], None]]


def receive_case(make_decoder: Callable[[], Any], read: bytes, limit: int = 64) -> Case:
    def setup() -> Callable[[int], None]:
        decoder = make_decoder()
        decoder.receive(read, limit)  # the first frame fixes a two-version decoder's version

        def run(n: int) -> None:
            receive = decoder.receive
            for _ in range(n):
                receive(read, limit)

        return run

    return setup


def split_case(make_decoder: Callable[[], Any], frame: bytes) -> Case:
    head, tail = frame[:7], frame[7:]

    def setup() -> Callable[[int], None]:
        decoder = make_decoder()
        decoder.receive(frame, 64)

        def run(n: int) -> None:
            receive = decoder.receive
            for _ in range(n):
                receive(head, 64)
                receive(tail, 64)

        return run

    return setup


def next_event_case(make_decoder: Callable[[], Any], frame: bytes) -> Case:
    def setup() -> Callable[[int], None]:
        decoder = make_decoder()
        decoder.feed(frame)
        decoder.next_event()

        def run(n: int) -> None:
            feed, next_event = decoder.feed, decoder.next_event
            for _ in range(n):
                feed(frame)
                next_event()

        return run

    return setup


def time_case(case: Case, calls: int) -> float:
    """CPU nanoseconds (this thread's: time spent descheduled on a busy machine does not count) per call of one timed run, GC off."""
    run = case()
    run(min(calls, 2_000))  # warm up
    gc.collect()
    gc.disable()
    try:
        started = time.thread_time_ns()
        run(calls)
        return (time.thread_time_ns() - started) / calls
    finally:
        gc.enable()


def rows(base: types.ModuleType) -> list[tuple[str, Case, Case, str]]:
    """(row, new case, reference case, what the ratio is to)."""
    new_v1, base_v1 = v1_frame(protocol), v1_frame(base)
    assert new_v1 == base_v1, "v1 framing changed"
    v2 = v2_frame()
    v2_16 = b"".join(v2_frame(i + 1) for i in range(16))

    def new_decoder() -> Any:
        return protocol.FrameDecoder()

    def base_decoder() -> Any:
        return base.FrameDecoder()

    def new_v2_decoder() -> Any:
        return protocol.FrameDecoder(kinds=protocol.SENT_BY_CLIENT)

    return [
        ("v1 receive 1", receive_case(new_decoder, new_v1), receive_case(base_decoder, base_v1), "base"),
        ("v1 receive 16", receive_case(new_decoder, new_v1 * 16), receive_case(base_decoder, base_v1 * 16), "base"),
        ("v1 split", split_case(new_decoder, new_v1), split_case(base_decoder, base_v1), "base"),
        ("v1 next_event", next_event_case(new_decoder, new_v1), next_event_case(base_decoder, base_v1), "base"),
        ("v1 on a two-version decoder, receive 1", receive_case(new_v2_decoder, new_v1), receive_case(base_decoder, base_v1), "base"),
        ("v2 receive 1", receive_case(new_v2_decoder, v2), receive_case(new_decoder, new_v1), "v1 receive 1 (this tree)"),
        ("v2 receive 16", receive_case(new_v2_decoder, v2_16), receive_case(new_decoder, new_v1 * 16), "v1 receive 16 (this tree)"),
        ("v2 split", split_case(new_v2_decoder, v2), split_case(new_decoder, new_v1), "v1 split (this tree)"),
    ]


LOOPS: dict[str, Callable[[Callable[[], Any], bytes], Case]] = {
    "receive1": receive_case,
    "receive16": lambda make, frame: receive_case(make, frame * 16),
    "split": split_case,
    "next_event": next_event_case,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--base", default="main")
    parser.add_argument("--loop", choices=sorted(LOOPS), help="only run CALLS calls of a v1 case (for callgrind)")
    args = parser.parse_args()
    if args.loop:
        LOOPS[args.loop](protocol.FrameDecoder, v1_frame(protocol))()(args.calls)
        return
    base = load_base(args.base)
    table = rows(base)
    best: dict[str, list[float]] = {name: [float("inf"), float("inf")] for name, *_ in table}
    for _ in range(args.repeat):
        for name, new, ref, _to in table:  # interleaved: new, then its reference, row by row
            best[name][0] = min(best[name][0], time_case(new, args.calls))
            best[name][1] = min(best[name][1], time_case(ref, args.calls))
    print(f"python {sys.version.split()[0]}, {args.calls} calls x {args.repeat} (best), base = {args.base}")
    print("| row | ns/call | reference ns/call | ratio | reference |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, _new, _ref, to in table:
        new_ns, ref_ns = best[name]
        print(f"| {name} | {new_ns:.0f} | {ref_ns:.0f} | {new_ns / ref_ns:.2f} | {to} |")


if __name__ == "__main__":
    main()
