"""Topic fan-out over real sockets (issue 23): ``python benchmarks/fanout.py``.

Every server is a process of its own (``fanout.py --serve KIND PORT``); the readers are
``fanout_reader`` (``fanout_reader.c``, built with ``cc -O2`` on first use: one thread,
epoll, it only reads and counts ITEM frames), pinned to core 1, the server to core 0,
where ``taskset`` exists and there are two cores.

1. **Fan-out in one process**: ``--conns`` connections (10,000) each open one v2 stream
   on a streaming handler that subscribes to a topic and yields every event; one request
   then publishes ``--events`` events (10) back to back. Figures: events delivered per
   second (first publish to last ITEM read) and the server's CPU per delivered event
   (``/proc/PID/task/*/schedstat``, before and after). Baseline in the same run: a raw asyncio server
   that, on the same request, writes the same ITEM frames (each event encoded once, a
   header per connection with its Stream-Id) with ``transport.write`` in a loop, one
   write per frame; and a second raw row that joins a fire's frames per connection into
   one write (asyncapy's streams write what a task step yields in one write).
2. **Across two instances through Redis** (``redis-server`` on a free port, started and
   ended here): ``--redis-conns`` (100) streams on instance A; the publishes are requests
   to instance B. Back to back (``--publishes``, each awaited): publishes per second, every
   one delivered to every stream; then paced (``--paced``, one every ``--pace`` s).
   Publish-to-delivery p50/p99 from the event's ``sent`` (B's ``time.monotonic()``) to
   the reader's read of its ITEM (``CLOCK_MONOTONIC``, the same clock).
3. **Memory per idle subscription**: RSS of a fresh server with ``--conns`` connections
   each holding an open stream that receives nothing, minus the RSS with as many idle v2
   connections (one request answered each), over N. And per idle v2 connection.

``--only fanout,redis,memory`` picks parts; ``--profile FILE``: cProfile of the asyncapy
server during part 1 (a ``.prof`` file for ``pstats``). The script always ends by itself:
the readers stop at ``--timeout``, every process it starts is ended.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from pydantic import BaseModel  # noqa: E402

from asyncapy import Client, Packet, Server  # noqa: E402

from topics import free_port, redis_server, wait_listening  # noqa: E402

READER = HERE / "fanout_reader"
READER_SRC = HERE / "fanout_reader.c"
TICKS = os.sysconf("SC_CLK_TCK")
NAMESPACE = "bench-fanout"
#: Ready waits for exactly N subscriptions; ones a previous reader left are gone within a second.
READY_POLLS = 6000  # x 10 ms: 60 s


class Event(BaseModel):
    seq: int
    sent: float = 0.0
    symbol: str = "ACME"


class Follow(BaseModel):
    follow: str


class Ready(BaseModel):
    ready: int


class Fire(BaseModel):
    fire: int
    pace: float = 0.0


# -- the servers ----------------------------------------------------------------------------------


def asyncapy_server(port: int, redis_url: str | None) -> Server:
    state = None
    if redis_url:
        from asyncapy.shared.redis import RedisState

        state = RedisState(redis_url, namespace=NAMESPACE, timeout=5.0)
    server = Server("127.0.0.1", port=port, timeout=3600, backlog=4096, shutdown_timeout=2, shared_state=state, logging_level="WARNING")
    events = server.topic("events", Event, max_buffered=100_000)

    @server.add_handler()
    async def follow(client: Client, packet: Packet[Follow]) -> AsyncIterator[Event]:
        async with events.subscribe() as stream:
            async for event in stream:
                yield event

    @server.add_handler()
    async def ready(client: Client, packet: Packet[Ready]) -> dict[str, int]:
        for _ in range(READY_POLLS):
            if events.subscribers == packet.data.ready:
                break
            await asyncio.sleep(0.01)
        return {"subscribers": events.subscribers}

    @server.add_handler()
    async def fire(client: Client, packet: Packet[Fire]) -> dict[str, float]:
        start = time.perf_counter()
        for seq in range(packet.data.fire):
            await events.publish(Event(seq=seq, sent=time.monotonic()))
            if packet.data.pace:
                await asyncio.sleep(packet.data.pace)
        return {"seconds": time.perf_counter() - start}

    return server


class RawFanout(asyncio.Protocol):
    """The baseline: v2 frames parsed by hand; a fire writes each event's ITEM to every stream."""

    streams: dict[RawFanout, bytes] = {}
    #: True (``--serve raw-joined``): the frames of one fire go to a connection in one write.
    joined = False

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.streams.pop(self, None)

    def data_received(self, data: bytes) -> None:
        import orjson

        buf = self.buf
        buf += data
        pos = 0
        while len(buf) - pos >= 15:
            end = pos + 4 + int.from_bytes(buf[pos : pos + 4], "big")
            if len(buf) < end:
                break
            sid = bytes(buf[pos + 7 : pos + 11])
            request = orjson.loads(bytes(buf[pos + 15 : end]))
            pos = end
            if "follow" in request:
                self.streams[self] = sid
            elif "ready" in request:
                asyncio.ensure_future(self.ready(sid, request["ready"]))
            elif "fire" in request:
                self.fire(sid, request["fire"])
        del buf[:pos]

    async def ready(self, sid: bytes, n: int) -> None:
        for _ in range(READY_POLLS):
            if len(self.streams) == n:
                break
            await asyncio.sleep(0.01)
        self.reply(sid, {"subscribers": len(self.streams)})

    def fire(self, sid: bytes, count: int) -> None:
        start = time.perf_counter()
        frames = []
        for seq in range(count):
            payload = Event(seq=seq, sent=time.monotonic()).model_dump_json().encode()
            head = (len(payload) + 11).to_bytes(4, "big") + b"\x17\x00\x02"
            tail = b"\x00\x00\x00\x00" + payload
            if self.joined:
                frames.append((head, tail))
                continue
            for proto, stream_id in self.streams.items():
                assert proto.transport is not None
                proto.transport.write(head + stream_id + tail)
        for proto, stream_id in self.streams.items() if self.joined else ():
            assert proto.transport is not None
            proto.transport.write(b"".join(head + stream_id + tail for head, tail in frames))
        self.reply(sid, {"seconds": time.perf_counter() - start})

    def reply(self, sid: bytes, obj: dict[str, Any]) -> None:
        import orjson

        payload = orjson.dumps(obj)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write((len(payload) + 11).to_bytes(4, "big") + b"\x17\x00\x01" + sid + b"\x00\x00\x00\x00" + payload)


async def serve_raw(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(RawFanout, "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def serve(kind: str, port: int, redis_url: str | None, profile: str | None) -> None:
    raise_nofile()
    if kind in ("raw", "raw-joined"):
        RawFanout.joined = kind == "raw-joined"
        asyncio.run(serve_raw(port))
        return
    server = asyncapy_server(port, redis_url)
    if profile is None:
        server.start()
        return
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    try:
        server.start()
    finally:
        prof.disable()
        prof.dump_stats(profile)


# -- the driver -----------------------------------------------------------------------------------


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def build_reader() -> Path:
    if READER.exists() and READER.stat().st_mtime >= READER_SRC.stat().st_mtime:
        return READER
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise SystemExit("no C compiler to build benchmarks/fanout_reader: apt-get install -y gcc (or set CC)")
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:
        out = Path(tmp) / "fanout_reader"
        subprocess.run([cc, "-O2", "-Wall", "-o", str(out), str(READER_SRC)], check=True)
        out.replace(READER)
    return READER


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid``'s threads: /proc/PID/task/*/schedstat (nanoseconds; a run of a few
    milliseconds is still measured), else utime + stime from /proc/PID/stat (10 ms ticks)."""
    try:
        return sum(int((task / "schedstat").read_text().split()[0]) for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@dataclass
class Options:
    pin: bool
    timeout: float
    verbose: bool


def pinned(cmd: list[str], core: str, opts: Options) -> list[str]:
    return ["taskset", "-c", core, *cmd] if opts.pin else cmd


@contextlib.contextmanager
def server(kind: str, opts: Options, core: str = "0", redis_url: str | None = None, profile: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A server process of ``kind`` listening on ``proc.port``; ended on leaving."""
    port = free_port()
    cmd = [sys.executable, __file__, "--serve", kind, str(port)]
    if redis_url:
        cmd += ["--redis-url", redis_url]
    if profile:
        cmd += ["--profile", profile]
    proc = subprocess.Popen(pinned(cmd, core, opts), stderr=None if opts.verbose else subprocess.DEVNULL)
    try:
        wait_listening(port, 30.0, proc)
        proc.port = port  # type: ignore[attr-defined]
        yield proc
    finally:
        proc.send_signal(signal.SIGINT if profile else signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Reader:
    """One ``fanout_reader`` run: open the streams, wait until ready, fire, count."""

    def __init__(self, opts: Options, port: int, conns: int, request: str, ready: str, fire: str, items: int,
                 fire_port: int | None = None, replies: bool = False) -> None:  # fmt: skip
        cmd = [str(READER), "--port", str(port), "--conns", str(conns), "--request", request, "--ready", ready,
               "--fire", fire, "--items", str(items), "--timeout", str(opts.timeout)]  # fmt: skip
        if fire_port:
            cmd += ["--fire-port", str(fire_port)]
        if replies:
            cmd.append("--replies")
        self.proc = subprocess.Popen(pinned(cmd, "1", opts), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.timeout = opts.timeout

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            raise SystemExit(f"fanout_reader did not get ready (exit {self.proc.wait()})")

    def go(self) -> dict[str, float]:
        """Fire and wait for the count; its figures."""
        out, _ = self.proc.communicate("go\n", timeout=self.timeout + 30)
        stats = {k: float(v) for k, v in (kv.split("=") for kv in out.split())}
        if stats["delivered"] < stats["expected"] or stats["errors"]:
            raise SystemExit(f"fanout_reader: {out.strip()}")
        return stats

    def quit(self) -> None:
        self.proc.communicate("quit\n", timeout=30)


def follow_args(conns: int) -> tuple[str, str]:
    return '{"follow":"events"}', json.dumps({"ready": conns})


def warm_up(proc: subprocess.Popen[bytes], opts: Options) -> None:
    """A few streams and one event: imports, caches and the first tasks, before measuring."""
    request, ready = follow_args(20)
    with Reader(opts, proc.port, 20, request, ready, '{"fire":2}', 2) as reader:  # type: ignore[attr-defined]
        reader.ready()
        reader.go()


def fanout_row(kind: str, conns: int, events: int, opts: Options, profile: str | None = None) -> dict[str, float]:
    with server(kind, opts, profile=profile) as proc:
        warm_up(proc, opts)
        request, ready = follow_args(conns)
        with Reader(opts, proc.port, conns, request, ready, json.dumps({"fire": events}), events) as reader:  # type: ignore[attr-defined]
            reader.ready()
            cpu = cpu_seconds(proc.pid)
            stats = reader.go()
            stats["cpu_us"] = (cpu_seconds(proc.pid) - cpu) / stats["delivered"] * 1e6
        return stats


ROWS = (
    ("raw", "raw asyncio, transport.write loop"),
    ("asyncapy", "asyncapy streaming handler + topic"),
    ("raw-joined", "raw asyncio, a fire's frames in one write per connection"),
)


def bench_fanout(conns: int, events: int, opts: Options, profile: str | None) -> None:
    rows = {kind: fanout_row(kind, conns, events, opts, profile if kind == "asyncapy" else None) for kind, _ in ROWS}
    raw = rows["raw"]
    print(f"## 1. Fan-out in one process: {conns:,} v2 streams, {events} events ({conns * events:,} deliveries)\n")
    print("| row | events delivered/s | ratio | server CPU µs/delivered event | ratio (raw/row) | first ITEM after | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, name in ROWS:
        s = rows[kind]
        rate = f"{s['rate'] / raw['rate']:.2f}" if kind != "raw" else "baseline"
        cpu = f"{raw['cpu_us'] / s['cpu_us']:.2f}" if kind != "raw" and s["cpu_us"] else "baseline"
        print(f"| {name} | {s['rate']:,.0f} | {rate} | {s['cpu_us']:.2f} | {cpu} | {s['first_ms']:.1f} ms | {s['errors']:.0f} |")
    print()


def bench_redis(conns: int, publishes: int, paced: int, pace: float, opts: Options) -> None:
    with redis_server() as url:
        with server("asyncapy", opts, "0", url) as a, server("asyncapy", opts, "1", url) as b:
            warm_up(a, opts)
            rows = []
            for count, p in ((publishes, 0.0), (paced, pace)):
                request, ready = follow_args(conns)
                fire = json.dumps({"fire": count, "pace": p})
                with Reader(opts, a.port, conns, request, ready, fire, count, fire_port=b.port) as reader:  # type: ignore[attr-defined]
                    reader.ready()
                    rows.append(reader.go())
    burst, slow = rows
    print(f"## 2. Across two instances through Redis: {conns} v2 streams on instance A, publishes requested of instance B\n")
    print("| row | publishes/s | deliveries/s | publish-to-delivery p50 | p99 |")
    print("|---|---:|---:|---:|---:|")
    print(f"| {publishes:,} publishes back to back (each awaited) | {publishes / burst['seconds']:,.0f} | {burst['rate']:,.0f}"
          f" | {burst['p50_us']:,.0f} µs | {burst['p99_us']:,.0f} µs |")  # fmt: skip
    print(f"| {paced:,} paced publishes, one every {pace * 1000:g} ms | {paced / slow['seconds']:,.0f} | {slow['rate']:,.0f}"
          f" | {slow['p50_us']:,.0f} µs | {slow['p99_us']:,.0f} µs |")  # fmt: skip
    print()


def held_rss(conns: int, streams: bool, opts: Options) -> float:
    """KiB the server grew by holding ``conns`` connections (with a stream each, or idle)."""
    with server("asyncapy", opts) as proc:
        warm_up(proc, opts)
        time.sleep(1.5)  # the warm-up's streams are closed
        before = rss_kib(proc.pid)
        request, ready = follow_args(conns) if streams else ('{"ready":0}', '{"ready":0}')
        with Reader(opts, proc.port, conns, request, ready, '{"fire":0}', 0, replies=not streams) as reader:  # type: ignore[attr-defined]
            reader.ready()
            time.sleep(2.0)
            after = rss_kib(proc.pid)
            reader.quit()
        return float(after - before)


def bench_memory(conns: int, opts: Options) -> None:
    idle = held_rss(conns, False, opts)
    streams = held_rss(conns, True, opts)
    print(f"## 3. Memory: {conns:,} connections held by an asyncapy server (RSS growth over N)\n")
    print("| row | KiB each |")
    print("|---|---:|")
    print(f"| idle v2 connection (one request answered) | {idle / conns:.2f} |")
    print(f"| connection holding an idle streamed subscription | {streams / conns:.2f} |")
    print(f"| idle subscription (the difference) | {(streams - idle) / conns:.2f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conns", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=10)
    parser.add_argument("--redis-conns", type=int, default=100)
    parser.add_argument("--publishes", type=int, default=5_000)
    parser.add_argument("--paced", type=int, default=1_000)
    parser.add_argument("--pace", type=float, default=0.001)
    parser.add_argument("--only", default="fanout,redis,memory")
    parser.add_argument("--timeout", type=float, default=120.0, help="a reader's limit, in seconds")
    parser.add_argument("--profile", metavar="FILE", help="cProfile of the asyncapy server of part 1")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), args.redis_url, args.profile)
        return
    raise_nofile()
    need = args.conns + 100
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        raise SystemExit(f"--conns {args.conns} needs {need} file descriptors; the limit is {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")
    build_reader()
    opts = Options(args.pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2, args.timeout, args.verbose)
    parts = set(args.only.split(","))
    print(f"`python benchmarks/fanout.py {' '.join(sys.argv[1:])}`, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs,"
          f" {'server on core 0, readers on core 1' if opts.pin else 'not pinned'}\n")  # fmt: skip
    if "fanout" in parts:
        bench_fanout(args.conns, args.events, opts, args.profile)
    if "redis" in parts:
        bench_redis(args.redis_conns, args.publishes, args.paced, args.pace, opts)
    if "memory" in parts:
        bench_memory(args.conns, opts)


if __name__ == "__main__":
    main()
