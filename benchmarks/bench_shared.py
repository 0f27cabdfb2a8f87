"""Past one machine, measured: ``python benchmarks/bench_shared.py``.

1. ``ApiKey`` check cost in memory with 10, 1,000, 100,000 and 1,000,000 keys (a hit
   and a miss), next to the linear compare-every-key check asyncapy had before, in the
   same run (that one only up to 100,000 keys: at 1,000,000 it takes ~50 ms a check).
2. Per-packet cost through the server's ``Connection`` (no sockets, one packet at a
   time, each reply awaited) of the typed row alone, with ``Server(rate_limit=...)`` in
   memory, and on a local Redis; and of a connection (open, one packet, close) without
   and with ``shared_state`` + ``session_limit``. Each row as µs and as a ratio to its
   baseline row, measured in the same run.
3. With ``--haproxy``: requests/s of the deploy example through HAProxy to two
   instances vs one instance direct (``benchmarks/loadgen``, 50 connections).

Needs ``redis-server`` (and ``haproxy`` for 3). Options: ``--keys-max N`` (1,000,000),
``--packets N`` (20,000), ``--repeat N`` (5, best kept), ``--duration S`` (5, for 3).
The machine may be shared: run baseline and variant together (this script does) and
repeat it before believing a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hmac
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import servers  # noqa: E402
from bench_connection import SinkTransport, frame  # noqa: E402
from loadgen_build import build_loadgen  # noqa: E402

from asyncapy import APIKeyFactory, Server  # noqa: E402
from asyncapy.serve.connection import Connection  # noqa: E402
from asyncapy.app.filters import RateLimit  # noqa: E402
from asyncapy.shared.redis import RedisState  # noqa: E402
from examples.deploy.stack import find_tool, free_port, running_stack  # noqa: E402

PERSON = b'{"name": "Ada Lovelace", "age": 36, "email": "ada@example.org", "score": 9.5, "active": true}'
#: High enough that no packet of the run is ever refused: the cost of counting, not of refusing.
NEVER_REACHED = "1000000000/second"


# -- 1. API keys ------------------------------------------------------------------------


def linear_contains(keys: dict[str, bytes], candidate: str) -> bool:
    """The check asyncapy had before: compare_digest against every key, no early exit."""
    given = candidate.encode()
    found = False
    for stored in tuple(keys.values()):
        found |= hmac.compare_digest(given, stored)
    return found


def best_per_call(fn: Callable[[], Any], calls: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / calls * 1e6


def _key(n: int) -> str:
    return f"key-{n:07d}-{'x' * 32}"


def bench_keys(keys_max: int, repeat: int) -> None:
    """Each check takes the next of 1,000 candidates (a hit row and a miss row), so a
    large table is not measured on one cached entry."""
    print(f"ApiKey check, in memory (µs per check, best of {repeat}; 'before' = compare with every key)")
    print(f"{'keys':>10} {'hit':>8} {'miss':>8} {'x 10 keys':>10} {'before: hit':>12} {'before: miss':>13}")
    base = None
    for count in (10, 1_000, 100_000, 1_000_000):
        if count > keys_max:
            break
        keys = APIKeyFactory(_key(n) for n in range(count))
        hits = [_key(n * count // 1000) for n in range(1000)]
        misses = [f"not-a-key-{n:06d}-{'y' * 27}" for n in range(1000)]
        hit = best_per_call(lambda: [keys.contains(c) for c in hits], 50, repeat) / 1000
        miss = best_per_call(lambda: [keys.contains(c) for c in misses], 50, repeat) / 1000
        base = base or (hit + miss) / 2
        before = ""
        if count <= 100_000:
            plain = {_key(n): _key(n).encode() for n in range(count)}
            calls = max(3, 20_000 // count)
            old_hit = best_per_call(lambda: linear_contains(plain, hits[0]), calls, repeat)
            old_miss = best_per_call(lambda: linear_contains(plain, misses[0]), calls, repeat)
            before = f"{old_hit:12.1f} {old_miss:13.1f}"
        print(f"{count:>10,} {hit:8.2f} {miss:8.2f} {(hit + miss) / 2 / base:9.2f}x {before}")
        del keys
        gc.collect()


# -- 2. per packet and per connection, through Connection ----------------------------------


class WaitingTransport(SinkTransport):
    """A sink that wakes a waiter on each write and on ``resume_reading`` (an admission)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        super().write(data)
        self._wake()

    def writelines(self, list_of_data: Any) -> None:
        super().writelines(list_of_data)
        self._wake()

    def resume_reading(self) -> None:
        super().resume_reading()
        self._wake()

    protocol: Any = None

    def set_protocol(self, protocol: Any) -> None:
        """The gate hands the transport to the connection once the session is admitted."""
        self.protocol = protocol
        self._wake()

    def get_protocol(self) -> Any:
        return self.protocol


def _open(ctx: Any, transport: WaitingTransport) -> None:
    """Open a connection as the listener would (through the gate when the pipeline has one)."""
    transport.protocol = ctx.protocol_factory()()
    transport.protocol.connection_made(transport)


async def _until(transport: WaitingTransport, ready: Callable[[], bool]) -> None:
    while not ready():
        transport.waiter = asyncio.get_running_loop().create_future()
        await transport.waiter


async def per_packet(server: Server, packets: int) -> float:
    ctx = server._serving_context(server.compile())
    transport = WaitingTransport()
    _open(ctx, transport)
    await _until(transport, lambda: type(transport.protocol) is Connection)
    conn = transport.protocol
    data = frame(PERSON)
    start = time.perf_counter()
    for n in range(1, packets + 1):
        conn.data_received(data)
        await _until(transport, lambda: transport.writes >= n)
    elapsed = time.perf_counter() - start
    conn.connection_lost(None)
    return elapsed / packets * 1e6


async def per_connection(server: Server, connections: int) -> float:
    ctx = server._serving_context(server.compile())
    data = frame(PERSON)
    start = time.perf_counter()
    for _ in range(connections):
        transport = WaitingTransport()
        _open(ctx, transport)  # through the gate (the shared admission) when there is one
        await _until(transport, lambda: type(transport.protocol) is Connection)
        transport.protocol.data_received(data)
        await _until(transport, lambda: transport.writes >= 1)
        transport.protocol.connection_lost(None)
    elapsed = time.perf_counter() - start
    if ctx.pipeline.admission is not None:
        await ctx.pipeline.admission.aclose()
    return elapsed / connections * 1e6


def bench_packets(redis_url: str, packets: int, repeat: int) -> None:
    memory = RateLimit(NEVER_REACHED)
    rows: list[tuple[str, Callable[[], Server], str]] = [
        ("typed", lambda: servers.typed_server(), ""),
        ("typed + RateLimit in memory", lambda: servers.typed_server(rate_limit=memory), "typed"),
        ("typed + RateLimit on Redis", lambda: servers.typed_server(rate_limit=RateLimit(NEVER_REACHED, state=RedisState(redis_url))), "typed"),
    ]
    conn_rows: list[tuple[str, Callable[[], Server], str]] = [
        ("connection, typed", lambda: servers.typed_server(session_limit=10**6), ""),
        ("connection, shared session_limit", lambda: servers.typed_server(session_limit=10**6, shared_state=RedisState(redis_url)), "connection, typed"),
    ]
    results: dict[str, float] = {}
    for _ in range(repeat):  # interleaved rows: a noisy neighbour hurts them alike
        for name, make, _base in rows:
            results[name] = min(results.get(name, float("inf")), asyncio.run(per_packet(make(), packets)))
        for name, make, _base in conn_rows:
            results[name] = min(results.get(name, float("inf")), asyncio.run(per_connection(make(), packets // 10)))
    print(f"\nPer packet / per connection through Connection, sequential (µs, best of {repeat})")
    for name, _make, base in rows + conn_rows:
        ratio = f"{results[name] / results[base]:.2f}x {base}" if base else "baseline"
        print(f"{name:<36} {results[name]:9.2f}   {ratio}")


# -- 3. through HAProxy --------------------------------------------------------------------


def loadgen(port: int, duration: float, payload: str) -> dict[str, str]:
    cmd = [str(HERE / "loadgen"), "--port", str(port), "--conns", "50", "--duration", str(duration), "--payload", payload]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return dict(pair.split("=", 1) for pair in out.stdout.split())


def bench_haproxy(duration: float) -> None:
    if build_loadgen() is None:
        sys.exit("cannot build benchmarks/loadgen (no C compiler: apt-get install -y gcc)")
    payload = '{"kind": "whoami"}'
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp), session_limit=10_000) as stack:
        direct_port = free_port()
        env = dict(os.environ, ASYNCAPY_REDIS_URL=stack.redis_url, ASYNCAPY_SESSION_LIMIT="10000", ASYNCAPY_PROXY_PROTOCOL="0")
        cmd = [sys.executable, "-m", "asyncapy", "run", "examples.deploy.app:server", "--port", str(direct_port), "--log-level", "warning"]
        direct = subprocess.Popen(cmd, cwd=HERE.parent, env=env)
        try:
            time.sleep(2)
            rows = {}
            for _ in range(2):
                for name, port in (("one instance, direct", direct_port), ("HAProxy -> two instances", stack.front_port)):
                    stats = loadgen(port, duration, payload)
                    rows.setdefault(name, []).append(float(stats["rps"]))
        finally:
            direct.terminate()
            direct.wait(15)
    print(f"\nRequests/s, 50 connections, {duration} s runs (best of 2)")
    for name, rps in rows.items():
        print(f"{name:<28} {max(rps):10,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys-max", type=int, default=1_000_000)
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--haproxy", action="store_true")
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    bench_keys(args.keys_max, args.repeat)
    redis = find_tool("redis-server", "redis-server")
    port = free_port()
    proc = subprocess.Popen([redis, "--port", str(port), "--bind", "127.0.0.1", "--save", ""], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        bench_packets(f"redis://127.0.0.1:{port}/0", args.packets, args.repeat)
    finally:
        proc.terminate()
        proc.wait(15)
    if args.haproxy:
        bench_haproxy(args.duration)


if __name__ == "__main__":
    main()
