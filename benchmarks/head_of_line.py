"""Head-of-line blocking on one connection: fast requests alone, then beside a slow one.

Usage: ``python benchmarks/head_of_line.py [--requests 1000] [--v1-requests 30] [--timeout 120]``.

One server process (``--serve PORT``, started by this script) with two handlers: ``slow``
sleeps 100 ms, ``test`` is the typed fast handler of ``run.py``. One connection, raw
frames (no client library in the measurement). Four cases, each a row of the printed
markdown table (latency of the fast requests, from the write of the request to its reply):

- v2 alone: ``--requests`` fast requests, one after another (each awaited);
- v2 beside a slow request: the same while a slow request is always in flight on the
  same connection (sent again as soon as it is answered);
- v1 alone, and v1 beside a slow request: on v1 the server handles a connection's
  requests in order, so each fast request waits behind the slow one (``--v1-requests``
  of them: each costs about 100 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncapy import Client, Packet, Server  # noqa: E402
from asyncapy.wire.protocol import encode_frame, encode_request  # noqa: E402

SLOW_SECONDS = 0.1
FAST = b'{"test": 1}'
SLOW = b'{"slow": 1}'
SLOW_ID = 1  # v2 Stream-Id of the slow request; the fast ones use FAST_ID
FAST_ID = 2


class Test(BaseModel):
    test: int


class Slow(BaseModel):
    slow: int


class Slept(BaseModel):
    slept: int


def build_server(port: int) -> Server:
    """The fast typed handler and a slow one; their models share no field, so each packet has one."""
    server = Server("127.0.0.1", port=port, logging_level=logging.WARNING)

    @server.add_handler()
    async def test(client: Client, packet: Packet[Test]) -> Test:
        return Test(test=packet.data.test)

    @server.add_handler()
    async def slow(client: Client, packet: Packet[Slow]) -> Slept:
        await asyncio.sleep(SLOW_SECONDS)
        return Slept(slept=packet.data.slow)

    return server


class Conn:
    """One connection; replies matched to requests by Stream-Id (v2) or by order (v1)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, version: int) -> None:
        self.reader, self.writer, self.version = reader, writer, version
        self.by_stream: dict[int, asyncio.Future[bytes]] = {}
        self.in_order: deque[asyncio.Future[bytes]] = deque()
        self.task = asyncio.ensure_future(self._read())

    async def request(self, payload: bytes, stream_id: int) -> bytes:
        """Send one request and return its reply's payload."""
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if self.version == 2:
            self.by_stream[stream_id] = done
            self.writer.write(encode_request(stream_id, payload, 0))
        else:
            self.in_order.append(done)
            self.writer.write(encode_frame(payload, 0))
        return await done

    async def _read(self) -> None:
        try:
            while True:
                length = int.from_bytes(await self.reader.readexactly(4), "big")
                body = await self.reader.readexactly(length)
                self._deliver(body)
        except Exception as exc:  # the connection ended: every waiter learns why
            for done in [*self.by_stream.values(), *self.in_order]:
                if not done.done():
                    done.set_exception(ConnectionError(f"connection lost: {exc!r}"))

    def _deliver(self, body: bytes) -> None:
        if self.version == 1:
            if body[0] != 22:
                raise ValueError(f"a v1 connection got Protocol-Version {body[0]}")
            self.in_order.popleft().set_result(body[2:])
            return
        if body[0] != 23 or body[2] != 1:
            raise ValueError(f"expected a v2 REPLY, got version {body[0]} kind {body[2]}")
        self.by_stream.pop(int.from_bytes(body[3:7], "big")).set_result(body[11:])

    async def close(self) -> None:
        self.task.cancel()
        self.writer.close()
        await asyncio.gather(self.task, return_exceptions=True)


async def keep_slow_in_flight(conn: Conn, stop: asyncio.Event) -> int:
    """Send the slow request again as soon as it is answered; how many were answered."""
    answered = 0
    while not stop.is_set():
        reply = await conn.request(SLOW, SLOW_ID)
        if b'"slept"' not in reply:
            raise ValueError(f"the slow request was answered {reply!r}")
        answered += 1
    return answered


async def fast_latencies(conn: Conn, count: int) -> list[float]:
    """``count`` fast requests one after another; each one's latency in µs."""
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        reply = await conn.request(FAST, FAST_ID)
        latencies.append((time.perf_counter() - start) * 1e6)
        if b'"test"' not in reply:
            raise ValueError(f"a fast request was answered {reply!r}")
    return latencies


async def one_case(port: int, version: int, count: int, with_slow: bool) -> tuple[list[float], int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = Conn(reader, writer, version)
    stop = asyncio.Event()
    slow = asyncio.ensure_future(keep_slow_in_flight(conn, stop)) if with_slow else None
    try:
        if slow is not None:
            await asyncio.sleep(0.01)  # the slow request is in the server first
        latencies = await fast_latencies(conn, count)
        stop.set()
        return latencies, (await slow if slow is not None else 0)
    finally:
        if slow is not None and not slow.done():
            slow.cancel()
        await conn.close()


def percentile(values: list[float], p: float) -> float:
    """Nearest rank, as loadgen computes it."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, int(p * len(ordered) + 0.999999))) - 1]


def start_server(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited early with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit(f"no server listening on port {port} after 30 s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def measure(port: int, args: argparse.Namespace) -> None:
    cases = [
        ("v2, fast alone", 2, args.requests, False),
        ("v2, beside a slow request", 2, args.requests, True),
        ("v1, fast alone", 1, args.requests, False),
        ("v1, beside a slow request", 1, args.v1_requests, True),
    ]
    print(f"`{' '.join(['python benchmarks/head_of_line.py', *sys.argv[1:]])}`: one connection, fast typed requests one after"
          f" another; the slow handler sleeps {SLOW_SECONDS * 1000:.0f} ms.")
    print()
    print("| case | fast requests | p50 µs | p99 µs | max µs | slow requests answered meanwhile |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, version, count, with_slow in cases:
        await one_case(port, version, min(count, 50), False)  # warm-up
        latencies, slow = await asyncio.wait_for(one_case(port, version, count, with_slow), args.timeout)
        print(f"| {name} | {len(latencies)} | {percentile(latencies, 0.5):,.0f} | {percentile(latencies, 0.99):,.0f}"
              f" | {max(latencies):,.0f} | {slow if with_slow else '-'} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="fast requests per case (default 1000)")
    parser.add_argument("--v1-requests", type=int, default=30, help="fast requests of v1 beside a slow one (~100 ms each; default 30)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds a case may take at most (default 120)")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        build_server(args.serve).start()
        return
    port = free_port()
    proc = start_server(port)
    try:
        asyncio.run(measure(port, args))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
