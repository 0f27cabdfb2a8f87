"""The client's speed: typed requests of one ``AsyncClient`` against one asyncapy server.

Run: ``.venv/bin/python benchmarks/bench_client.py`` (about a minute; ``--runs 1`` is quicker).

The server is ``benchmarks/servers.py typed`` (a 5-field ``Person`` in, a ``Reply``
model out) in its own process. In this process, for each row, 10,000 requests with
50 in flight (50 tasks sharing one client):

- ``AsyncClient v2``: ``await client.request(person, reply=Reply)`` on the default
  client, AsyncAProto v2: all 50 in flight on one connection;
- ``AsyncClient v1 pool=1`` / ``pool=8``: the same on v1 (``protocol=1``), taking turns
  on 1 or 8 connections;
- ``Client (blocking) v2`` / ``v1 pool=8``: 50 threads sharing one blocking ``Client``;
- ``raw asyncio, N conn(s), taking turns``: the baseline, a minimal ``asyncio.Protocol``
  client doing what the ``AsyncClient`` does on the wire (one request in flight per
  connection, the 50 tasks taking turns with an ``asyncio.Lock``; orjson in and out, no
  validation), over 1 and 8 connections;
- ``raw asyncio, 1 conn, depth 50``: the same minimal client pipelining 50 requests on
  one connection (what the protocol allows when every handler answers exactly once);
- ``C loadgen ...``: the epoll load generator (``benchmarks/loadgen``, built from
  ``benchmarks/loadgen.c`` when missing) on the same server, same shapes.

Columns: requests/s, and the client's own CPU per request in microseconds
(``time.process_time`` of this process, or ``RUSAGE_CHILDREN`` for the load generator;
the server's CPU is not in it). Rows are interleaved and repeated (``--runs``, medians),
so that a busy neighbour hurts every row alike; compare rows of one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from asyncapy.client import AsyncClient, Client  # noqa: E402
from loadgen_build import LOADGEN, build_loadgen  # noqa: E402  (beside this script)

IN_FLIGHT = 50


class Person(BaseModel):
    name: str
    age: int
    email: str
    score: float
    active: bool


class Reply(BaseModel):
    status: Literal["ok"]
    name: str
    age: int


PERSON = Person(name="Ada Lovelace", age=36, email="ada@example.org", score=9.5, active=True)
PERSON_JSON = PERSON.model_dump_json()

Row = Callable[[int, int], Awaitable[int]]


# -- the rows ----------------------------------------------------------------------------------


def blocking_row(pool_size: int, protocol: int) -> Row:
    """50 threads sharing one blocking ``Client``."""

    def talk(port: int, requests: int) -> int:
        with Client("127.0.0.1", port, pool_size=pool_size, protocol=protocol, timeout=30) as client:
            left = [requests]
            counts: list[int] = []
            lock = threading.Lock()

            def worker() -> None:
                done = 0
                while True:
                    with lock:
                        if left[0] <= 0:
                            break
                        left[0] -= 1
                    reply = client.request(PERSON, reply=Reply)
                    assert reply.age == 36
                    done += 1
                counts.append(done)

            threads = [threading.Thread(target=worker) for _ in range(IN_FLIGHT)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return sum(counts)

    async def run(port: int, requests: int) -> int:
        return await asyncio.to_thread(talk, port, requests)

    return run


def asyncapy_row(pool_size: int, protocol: int) -> Row:
    async def run(port: int, requests: int) -> int:
        async with AsyncClient("127.0.0.1", port, pool_size=pool_size, protocol=protocol, timeout=30) as client:
            left = [requests]

            async def worker() -> int:
                done = 0
                while left[0] > 0:
                    left[0] -= 1
                    reply = await client.request(PERSON, reply=Reply)
                    assert reply.age == 36
                    done += 1
                return done

            return sum(await asyncio.gather(*(worker() for _ in range(IN_FLIGHT))))

    return run


class RawClient(asyncio.Protocol):
    """The baseline: frame a dict with orjson, read replies, decode them with orjson."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiters: list[asyncio.Future[dict[str, object]]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        while len(buf) - pos >= 6:
            end = pos + 4 + int.from_bytes(buf[pos : pos + 4], "big")
            if len(buf) < end:
                break
            self.waiters.pop(0).set_result(orjson.loads(bytes(buf[pos + 6 : end])))
            pos = end
        del buf[:pos]

    def request(self, obj: dict[str, object]) -> asyncio.Future[dict[str, object]]:
        payload = orjson.dumps(obj)
        assert self.transport is not None
        self.transport.write((len(payload) + 2).to_bytes(4, "big") + b"\x16\x00" + payload)
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        return waiter


def raw_row(conns: int, pipelined: bool) -> Row:
    """50 tasks over ``conns`` connections: taking turns (an ``asyncio.Lock`` per connection,
    as the ``AsyncClient`` does) or all pipelined at once."""

    async def run(port: int, requests: int) -> int:
        loop = asyncio.get_running_loop()
        clients = [(await loop.create_connection(RawClient, "127.0.0.1", port))[1] for _ in range(conns)]
        locks = [asyncio.Lock() for _ in clients]
        obj = orjson.loads(PERSON_JSON)
        left = [requests]

        async def worker(i: int) -> int:
            client, lock = clients[i % conns], locks[i % conns]
            done = 0
            while left[0] > 0:
                left[0] -= 1
                if pipelined:
                    reply = await client.request(obj)
                else:
                    async with lock:
                        reply = await client.request(obj)
                assert reply["age"] == 36
                done += 1
            return done

        try:
            return sum(await asyncio.gather(*(worker(i) for i in range(IN_FLIGHT))))
        finally:
            for client in clients:
                assert client.transport is not None
                client.transport.close()

    return run


def measure_python(row: Row, port: int, requests: int) -> tuple[float, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    done = asyncio.run(row(port, requests))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    assert done == requests, (done, requests)
    return done / wall, cpu / done * 1e6


def measure_loadgen(port: int, requests: int, conns: int, depth: int, pin: bool) -> tuple[float, float]:
    cmd = [str(LOADGEN), "--port", str(port), "--conns", str(conns), "--depth", str(depth),
           "--requests", str(requests), "--payload", PERSON_JSON]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(pinned(cmd, "1", pin), capture_output=True, text=True, timeout=120, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    stats = dict(pair.split("=", 1) for pair in out.stdout.split())
    if out.returncode != 0 or "rps" not in stats:
        sys.exit(f"loadgen failed: {out.stderr.strip()}")
    if int(stats.get("errors", "0")):
        sys.exit(f"loadgen saw errors: {out.stdout.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    done = int(stats["requests"])
    return float(stats["rps"]), cpu / done * 1e6


# -- set-up ---------------------------------------------------------------------------------------


def find_loadgen() -> Path | None:
    """The C load generator, built from benchmarks/loadgen.c when missing (None: no compiler)."""
    return build_loadgen()


def pinned(cmd: list[str], cores: str, pin: bool) -> list[str]:
    return ["taskset", "-c", cores, *cmd] if pin else cmd


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(pin: bool) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd = [sys.executable, str(HERE / "servers.py"), "typed", str(port)]
    proc = subprocess.Popen(pinned(cmd, "0", pin), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited early with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    sys.exit(f"no server listening on port {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin server/client to cores 0/1")
    args = parser.parse_args()
    pin = args.pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {1})
    loadgen = find_loadgen()

    python_rows: dict[str, Row] = {
        "AsyncClient v2, 50 in flight": asyncapy_row(1, 2),
        "AsyncClient v1 pool=1, 50 in flight": asyncapy_row(1, 1),
        "raw asyncio, 1 conn, taking turns": raw_row(1, False),
        "AsyncClient v1 pool=8, 50 in flight": asyncapy_row(8, 1),
        "Client (blocking) v2, 50 threads": blocking_row(1, 2),
        "Client (blocking) v1 pool=8, 50 threads": blocking_row(8, 1),
        "raw asyncio, 8 conns, taking turns": raw_row(8, False),
        "raw asyncio, 1 conn, depth 50": raw_row(1, True),
    }
    c_rows = {
        "C loadgen, 1 conn, depth 1": (1, 1),
        "C loadgen, 8 conns, depth 1": (8, 1),
        "C loadgen, 1 conn, depth 50": (1, IN_FLIGHT),
    }
    results: dict[str, list[tuple[float, float]]] = {}
    proc, port = start_server(pin)
    try:
        measure_python(asyncapy_row(1, 2), port, 1000)  # warm-up: the server's first packets, imports
        for run in range(args.runs):
            for name, row in python_rows.items():
                results.setdefault(name, []).append(measure_python(row, port, args.requests))
            if loadgen is not None:
                for name, (conns, depth) in c_rows.items():
                    results.setdefault(name, []).append(measure_loadgen(port, args.requests, conns, depth, pin))
            print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(10)

    print(f"{args.requests} typed requests per row, {args.runs} run(s), medians; server: benchmarks/servers.py typed")
    print(f"{'row':44} {'req/s':>9} {'client cpu us/req':>18}")
    for name, values in results.items():
        rps = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        print(f"{name:44} {rps:9.0f} {cpu:18.1f}")
    if loadgen is None:
        print("(no C load generator: no C compiler (cc) to build benchmarks/loadgen.c)")


if __name__ == "__main__":
    main()
