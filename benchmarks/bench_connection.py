"""The server's Python cost per packet, without sockets: ``python benchmarks/bench_connection.py``.

Each server's protocol object gets a fake transport that swallows what it writes, and
is fed one framed request per ``data_received`` call from a plain loop callback (the
way the event loop calls it, outside any task). The raw asyncio baseline of
``benchmarks/servers.py`` runs the same way in the same process, so every asyncapy
figure is quoted next to it: its extra microseconds per packet and its cost as a
multiple of the baseline's. This is the fast loop for hot-path work; ``run.py`` is
the judge, because sockets and the event loop are most of the real cost.

Options: ``--packets N`` (50,000), ``--repeat N`` (5; the best run is kept),
``--only NAME`` (repeatable; their baselines are added unless ``--no-base``),
``--profile NAME`` (cProfile one row, print the top).

For changes too small to time, count instructions instead (deterministic):
``valgrind --tool=callgrind --callgrind-out-file=/dev/null python
benchmarks/bench_connection.py --only NAME --no-base --repeat 1 --packets N`` for two
values of N; the difference of the two totals over the difference of N is the
instructions per packet.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import msgpack  # noqa: E402
import servers  # noqa: E402

from asyncapy import Server  # noqa: E402
from asyncapy.serve.connection import Connection  # noqa: E402

PERSON = b'{"name": "Ada Lovelace", "age": 36, "email": "ada@example.org", "score": 9.5, "active": true}'
TAGGED = b'{"kind": "m999", "value": 7}'


class SinkTransport(asyncio.Transport):
    """Counts what is written; reading can be paused like a socket transport's."""

    def __init__(self) -> None:
        super().__init__({"peername": ("127.0.0.1", 40000)})
        self.written = 0
        self.protocol: asyncio.BaseProtocol | None = None
        self.writes = 0
        self._reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)
        self.writes += 1

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.written += len(data)
        self.writes += 1

    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        self._reading = True

    def get_write_buffer_size(self) -> int:
        return 0

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol  # a v2 connection hands its socket to its multiplexer

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


def frame(payload: bytes, encoding: int = 0) -> bytes:
    return (len(payload) + 2).to_bytes(4, "big") + bytes((22, encoding)) + payload


def v2_frame(payload: bytes, encoding: int = 0) -> bytes:
    """An AsyncAProto v2 REQUEST on Stream-Id 1 (each is answered before the next is read)."""
    return (len(payload) + 11).to_bytes(4, "big") + bytes((23, encoding, 0)) + (1).to_bytes(4, "big") + bytes(4) + payload


def asyncapy_protocol(server: Server) -> Callable[[], asyncio.Protocol]:
    ctx = server._serving_context(server.compile())
    return lambda: Connection(ctx)


ROWS: dict[str, tuple[Callable[[], Callable[[], asyncio.Protocol]], bytes]] = {
    "raw echo": (lambda: servers.RawEcho, frame(b'{"test": 1}')),
    "asyncapy echo": (lambda: asyncapy_protocol(servers.echo_server()), frame(b'{"test": 1}')),
    "raw echo, 5-field payload": (lambda: servers.RawEcho, frame(PERSON)),
    "asyncapy typed handler": (lambda: asyncapy_protocol(servers.typed_server()), frame(PERSON)),
    "asyncapy echo, v2": (lambda: asyncapy_protocol(servers.echo_server()), v2_frame(b'{"test": 1}')),
    "asyncapy typed handler, v2": (lambda: asyncapy_protocol(servers.typed_server()), v2_frame(PERSON)),
    "asyncapy ziproto": (
        lambda: asyncapy_protocol(servers.echo_server()),
        frame(msgpack.packb({"test": 1}), 1),
    ),
    "asyncapy 1000 tagged handlers": (lambda: asyncapy_protocol(servers.tagged_server(1000)), frame(TAGGED)),
    "asyncapy typed + dependency": (lambda: asyncapy_protocol(servers.app_server(True, False)), frame(PERSON)),
    "asyncapy typed + middleware": (lambda: asyncapy_protocol(servers.app_server(False, True)), frame(PERSON)),
    "asyncapy typed + dep + middleware": (lambda: asyncapy_protocol(servers.app_server(True, True)), frame(PERSON)),
}
#: Rows that open a connection per packet (connection_made, one read, connection_lost).
RECONNECT = {"raw reconnect": (lambda: servers.RawEcho, frame(b'{"test": 1}')),
             "asyncapy reconnect": (lambda: asyncapy_protocol(servers.echo_server()), frame(b'{"test": 1}'))}
ROWS.update(RECONNECT)
BASE = {
    "asyncapy echo": "raw echo",
    "asyncapy typed handler": "raw echo, 5-field payload",
    "asyncapy echo, v2": "raw echo",
    "asyncapy typed handler, v2": "raw echo, 5-field payload",
    "asyncapy typed + dependency": "raw echo, 5-field payload",
    "asyncapy typed + middleware": "raw echo, 5-field payload",
    "asyncapy typed + dep + middleware": "raw echo, 5-field payload",
    "asyncapy ziproto": "raw echo",
    "asyncapy reconnect": "raw reconnect",
}  # fmt: skip


async def feed(factory: Callable[[], asyncio.Protocol], data: bytes, packets: int) -> tuple[float, int]:
    """Seconds to feed ``packets`` single-packet reads, and bytes written back."""
    loop = asyncio.get_running_loop()
    protocol = factory()
    transport = SinkTransport()
    transport.protocol = protocol
    protocol.connection_made(transport)
    done: asyncio.Future[float] = loop.create_future()

    def run() -> None:  # a loop callback, as the selector's read callback is
        protocol.data_received(data)  # the first frame: a v2 one hands the socket to a multiplexer
        received = transport.protocol.data_received
        start = time.perf_counter()
        for _ in range(packets - 1):
            received(data)
        done.set_result(time.perf_counter() - start)

    loop.call_soon(run)
    elapsed = await done
    await asyncio.sleep(0)
    transport.protocol.connection_lost(None)
    return elapsed, transport.written


async def reconnect(factory: Callable[[], asyncio.Protocol], data: bytes, packets: int) -> tuple[float, int]:
    """Seconds for ``packets`` connections of one packet each, the loop callbacks they schedule included."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    written = 0
    start = time.perf_counter()

    def batch(left: int) -> None:  # 100 connections per loop turn, then let their callbacks run
        nonlocal written
        for _ in range(min(left, 100)):
            protocol = factory()
            transport = SinkTransport()
            protocol.connection_made(transport)
            protocol.data_received(data)
            protocol.connection_lost(None)
            written += transport.written
        if left > 100:
            loop.call_soon(batch, left - 100)
        else:
            loop.call_soon(lambda: done.set_result(time.perf_counter() - start))

    loop.call_soon(batch, packets)
    elapsed = await done
    return elapsed, written


def measure(name: str, packets: int, repeat: int) -> float:
    make, data = ROWS[name]
    factory = make()
    best = float("inf")
    run = reconnect if name in RECONNECT else feed
    for _ in range(repeat):
        gc.collect()
        elapsed, written = asyncio.run(run(factory, data, packets))
        if written == 0:
            sys.exit(f"{name}: nothing was written back")
        best = min(best, elapsed)
    return best / packets * 1e6


def profile(name: str, packets: int) -> None:
    make, data = ROWS[name]
    factory = make()
    prof = cProfile.Profile()
    prof.enable()
    asyncio.run((reconnect if name in RECONNECT else feed)(factory, data, packets))
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--profile", metavar="NAME")
    parser.add_argument("--no-base", action="store_true", help="do not add the baseline rows of --only rows")
    args = parser.parse_args()
    if args.profile:
        profile(args.profile, args.packets)
        return
    exact = [n for n in ROWS if n in args.only]
    names = exact or [n for n in ROWS if not args.only or any(o in n for o in args.only)]
    if not args.no_base:
        names = sorted(set(names) | {BASE[n] for n in names if n in BASE}, key=list(ROWS).index)
    results = {name: measure(name, args.packets, args.repeat) for name in names}
    print(f"# {args.packets} packets per run, best of {args.repeat}, python {sys.version.split()[0]}")
    print(f"{'row':34} {'us/packet':>9} {'extra us':>8} {'x base':>7}")
    for name, us in results.items():
        base = BASE.get(name)
        if base in results:
            print(f"{name:34} {us:9.2f} {us - results[base]:8.2f} {us / results[base]:7.2f}")
        else:
            print(f"{name:34} {us:9.2f}")


if __name__ == "__main__":
    main()
